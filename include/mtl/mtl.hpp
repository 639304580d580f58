// Umbrella header: every module, mixer and function of the library
// (training support lives in optim/, metrics/, data/ and train/).
#pragma once

#include <mtl/aitm.hpp>
#include <mtl/aligner.hpp>
#include <mtl/cross_net_v2.hpp>
#include <mtl/deepfm.hpp>
#include <mtl/embedding.hpp>
#include <mtl/esmm.hpp>
#include <mtl/expert.hpp>
#include <mtl/features.hpp>
#include <mtl/functional/expert_mixing.hpp>
#include <mtl/functional/fm.hpp>
#include <mtl/functional/losses.hpp>
#include <mtl/gate.hpp>
#include <mtl/mixer.hpp>
#include <mtl/mlp.hpp>
#include <mtl/mmoe.hpp>
#include <mtl/model.hpp>
#include <mtl/ple.hpp>
#include <mtl/shared_bottom.hpp>
#include <mtl/tower.hpp>
#include <mtl/version.hpp>
