// What the training runtime (runtime/training.cpp, the actnn::run_training
// op) shares with tools: reaching a module's tensors by state_dict key.
#pragma once

#include <ATen/core/ivalue.h>

#include <string>

namespace actnn {

// The attribute at a dotted path ("layer1.0.conv1.weight") of a module
// object; throws naming the path when it does not exist.
c10::IValue attributePath(const c10::intrusive_ptr<c10::ivalue::Object>& root, const std::string& path);

}  // namespace actnn
