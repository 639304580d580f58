# Stops a configure where LibTorch's CMake package mixed two installations:
# TorchConfig.cmake searches the system's directories before its own for
# libtorch.so, so with Debian's libtorch-dev installed beside a pip or official
# LibTorch, the torch target would name libraries of both. Used by mtl's build
# and by mtlConfig.cmake, after find_package(Torch).
function(mtl_check_torch_installation)
  get_filename_component(prefix "${TORCH_INSTALL_PREFIX}" REALPATH)
  get_filename_component(library "${TORCH_LIBRARY}" REALPATH)
  string(FIND "${library}" "${prefix}/" at)
  if(NOT at EQUAL 0)
    message(FATAL_ERROR "LibTorch's CMake package is ${TORCH_INSTALL_PREFIX}, but it found its libtorch at "
                        "${TORCH_LIBRARY}: two LibTorch installations would be mixed. Put the LibTorch directory "
                        "itself on CMAKE_PREFIX_PATH (for a pip torch: -DCMAKE_PREFIX_PATH=\"$(python -c 'import torch, "
                        "os; print(os.path.dirname(torch.__file__))')\") in a fresh build directory.")
  endif()
endfunction()
