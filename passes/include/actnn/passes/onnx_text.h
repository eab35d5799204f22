// ONNX models as text in the syntax of ::onnx::OnnxParser (ONNX 1.12), the form
// of `.onnxtxt` inputs and of `actnn-opt --emit=onnxtxt`. ONNX 1.12's own
// printer has no model printer and drops node domains, which the training
// rewrite's output (com.actnn, com.microsoft nodes) needs.
#pragma once

#include <ostream>
#include <string>

#include "onnx/onnx_pb.h"

namespace actnn {

// `<ir_version: .., opset_import: [..]>` then the main graph: signature,
// initializers, and one `outputs = domain.Op<attributes>(inputs)` line per
// node. Value names that are not identifiers (ONNX Runtime's "/conv/Conv_output_0")
// are printed as they are, so such a model reads well but does not parse back.
// Floats are printed with enough digits to read back exactly. Throws
// std::invalid_argument for what the 1.12 parser cannot read back (float16 /
// bfloat16 tensors, inf / NaN / subnormal values, external data) rather than
// printing something else.
void printOnnxModel(std::ostream& os, const ::onnx::ModelProto& model);
std::string onnxModelText(const ::onnx::ModelProto& model);

}  // namespace actnn
