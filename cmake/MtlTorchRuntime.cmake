# How mtl joins the LibTorch it builds against: which fmt it uses, whether the
# layers' products go to oneDNN's sgemm (MTL_ONEDNN) and which OpenMP runtime
# mtl's parallel loops run on. Included once by the top-level CMakeLists after
# find_package(Torch).
#
# Sets MTL_FMT_FROM_TORCH, MTL_WITH_ONEDNN, MTL_OPENMP_RUNTIME (LibTorch's own
# runtime file where mtl links it, else empty) and MTL_USES_OPENMP_TARGET, and
# adds what they name to the mtl target; mtlConfig.cmake finds the same.

include("${CMAKE_CURRENT_LIST_DIR}/MtlCheckTorch.cmake")
mtl_check_torch_installation()
get_filename_component(mtl_torch_prefix "${TORCH_INSTALL_PREFIX}" REALPATH)

# The shared library that holds LibTorch's CPU kernels, and what it loads.
get_target_property(mtl_torch_cpu_file torch_cpu LOCATION)
set(mtl_torch_cpu_needs "")
if(mtl_torch_cpu_file AND CMAKE_OBJDUMP)
  execute_process(COMMAND "${CMAKE_OBJDUMP}" -p "${mtl_torch_cpu_file}"
                  OUTPUT_VARIABLE mtl_torch_cpu_headers ERROR_QUIET RESULT_VARIABLE mtl_objdump_failed)
  if(NOT mtl_objdump_failed)
    string(REGEX MATCHALL "NEEDED +[^\n]+" mtl_torch_cpu_needs "${mtl_torch_cpu_headers}")
  endif()
endif()

# A pip wheel's LibTorch carries no RUNPATH to the CUDA libraries beside it
# (site-packages/nvidia/*/lib; Python preloads them): a C++ program would link
# and load the system's CUDA libraries instead, or none. Where those folders
# exist, programs that link mtl find them first, at link time and at run time
# (DT_RPATH, which also serves the libraries' own dependencies).
get_filename_component(mtl_site_packages "${mtl_torch_prefix}" DIRECTORY)
file(GLOB mtl_wheel_cuda_dirs LIST_DIRECTORIES true "${mtl_site_packages}/nvidia/*/lib/" "${mtl_site_packages}/nvidia/cu*/*/lib/")
foreach(dir IN LISTS mtl_wheel_cuda_dirs)
  target_link_options(mtl INTERFACE "LINKER:-rpath,${dir}" "LINKER:-rpath-link,${dir}")
endforeach()
if(mtl_wheel_cuda_dirs)
  target_link_options(mtl INTERFACE "LINKER:--disable-new-dtags")
  list(LENGTH mtl_wheel_cuda_dirs mtl_wheel_dir_count)
  message(STATUS "mtl: the wheel's ${mtl_wheel_dir_count} CUDA library folders go on the rpath")
endif()

# fmt: LibTorch 2.x ships fmt's headers in its include directory, which comes
# before the system's on the include path; mtl then uses them header-only
# rather than compile against one fmt and link another.
if(EXISTS "${mtl_torch_prefix}/include/fmt/format.h" AND
   NOT "${mtl_torch_prefix}/include" IN_LIST CMAKE_CXX_IMPLICIT_INCLUDE_DIRECTORIES)
  set(MTL_FMT_FROM_TORCH ON)
  target_compile_definitions(mtl INTERFACE FMT_HEADER_ONLY=1)
  message(STATUS "mtl: fmt from LibTorch's headers, header-only")
else()
  set(MTL_FMT_FROM_TORCH OFF)
  find_package(fmt REQUIRED)
  target_link_libraries(mtl INTERFACE fmt::fmt)
endif()

# oneDNN: its sgemm is worth calling only where LibTorch itself loads the shared
# libdnnl (Debian's build); official and pip builds link oneDNN statically with
# hidden symbols and run ATen's products (MKL) instead.
set(MTL_ONEDNN AUTO CACHE STRING
    "Layer products through oneDNN's sgemm: AUTO (where LibTorch loads the shared libdnnl), ON or OFF")
set_property(CACHE MTL_ONEDNN PROPERTY STRINGS AUTO ON OFF)
if(NOT MTL_ONEDNN MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "MTL_ONEDNN expects AUTO, ON or OFF, got '${MTL_ONEDNN}'")
endif()
set(MTL_WITH_ONEDNN OFF)
if(MTL_ONEDNN STREQUAL "ON")
  find_package(dnnl CONFIG REQUIRED)
  set(MTL_WITH_ONEDNN ON)
elseif(MTL_ONEDNN STREQUAL "AUTO" AND mtl_torch_cpu_needs MATCHES "libdnnl\\.so")
  find_package(dnnl CONFIG QUIET)
  set(MTL_WITH_ONEDNN ${dnnl_FOUND})
endif()
if(MTL_WITH_ONEDNN)
  target_link_libraries(mtl INTERFACE DNNL::dnnl)
  target_compile_definitions(mtl INTERFACE MTL_WITH_ONEDNN=1)
  message(STATUS "mtl: MTL_ONEDNN=${MTL_ONEDNN}: layer products through oneDNN's sgemm")
else()
  message(STATUS "mtl: MTL_ONEDNN=${MTL_ONEDNN}: layer products through ATen (LibTorch: ${mtl_torch_cpu_file})")
endif()

# OpenMP: at::parallel_for in our headers runs in parallel only where the code
# that includes them is compiled with OpenMP. Its calls must reach the runtime
# LibTorch loads, or two runtimes share the cores: where LibTorch ships its own
# (pip wheels: torch/lib/libgomp*.so*), mtl links that file instead of the
# compiler's.
find_package(OpenMP)
set(MTL_OPENMP_RUNTIME "")
if(OpenMP_CXX_FOUND)
  get_filename_component(mtl_torch_lib_dir "${mtl_torch_cpu_file}" DIRECTORY)
  set(mtl_torch_gomp "")
  if(NOT mtl_torch_lib_dir IN_LIST CMAKE_CXX_IMPLICIT_LINK_DIRECTORIES)  # a system directory holds the system's
    file(GLOB mtl_torch_gomp LIST_DIRECTORIES false "${mtl_torch_lib_dir}/libgomp*.so*")
  endif()
  if(mtl_torch_gomp AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    list(GET mtl_torch_gomp 0 MTL_OPENMP_RUNTIME)
    separate_arguments(mtl_openmp_flags UNIX_COMMAND "${OpenMP_CXX_FLAGS}")
    target_compile_options(mtl INTERFACE "$<$<COMPILE_LANGUAGE:CXX>:${mtl_openmp_flags}>")
    target_link_libraries(mtl INTERFACE "${MTL_OPENMP_RUNTIME}")
    message(STATUS "mtl: OpenMP through LibTorch's own runtime ${MTL_OPENMP_RUNTIME}")
  else()
    target_link_libraries(mtl INTERFACE OpenMP::OpenMP_CXX)
  endif()
else()
  message(WARNING "no OpenMP for this compiler: mtl's own parallel loops will run on one thread "
                  "(for clang, install libomp-dev)")
endif()
# Whether the mtl target names OpenMP::OpenMP_CXX, which mtlConfig.cmake must then find.
if(OpenMP_CXX_FOUND AND NOT MTL_OPENMP_RUNTIME)
  set(MTL_USES_OPENMP_TARGET ON)
else()
  set(MTL_USES_OPENMP_TARGET OFF)
endif()
