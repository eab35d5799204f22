#include "bench_models.h"

#include "actnn/passes/onnx_import.h"

#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/jit/serialization/import.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <ATen/Parallel.h>

#include "actnn/passes/registry.h"
#include "args.h"

namespace actnn {
namespace tools {
namespace {

bool exists(const std::string& path) { return std::ifstream(path).good(); }

std::string shellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

void declareModelFlags(Args& args, const char* default_level, const char* default_batch) {
  args.flag("model", "resnet50", "torchvision model name, or a TorchScript archive (.pt)")
      .flag("level", default_level, "compression level of the compiled module (L0..L5)")
      .flag("passes", "", "an explicit pipeline instead of the level's (the level names the result)")
      .flag("batch", default_batch, "samples per step")
      .flag("image", "224", "image height and width")
      .flag("channels", "3", "image channels")
      .flag("threads", "0", "CPU threads (0: LibTorch's default)");
}

ModelFlags readModelFlags(const Args& args, bool allow_fp) {
  ModelFlags f;
  f.model = args.str("model");
  f.level = args.str("level");
  f.passes = args.str("passes");
  f.batch = args.integer("batch");
  f.image = args.integer("image");
  f.channels = args.integer("channels");
  const int64_t threads = args.integer("threads");
  if (f.batch < 1 || f.image < 1 || f.channels < 1)
    throw UsageError("--batch, --image and --channels must be positive");
  checkLevels({f.level}, allow_fp);
  if (!f.passes.empty()) {
    try {
      parsePipeline(f.passes);
    } catch (const CompileError& e) {
      throw UsageError(e.what());
    }
  }
  setThreads(threads);
  return f;
}

void checkLevels(const std::vector<std::string>& levels, bool allow_fp) {
  for (const auto& level : levels) {
    if (allow_fp && level == "fp") continue;
    try {
      levelPipeline(level);
    } catch (const CompileError& e) {
      throw UsageError(e.what());
    }
  }
}

Options ModelFlags::options() const {
  Options o;
  o.level = level;
  o.passes = passes;
  return o;
}

Options levelVariant(const std::string& name) {
  static const std::string suffix = "-biased";
  const bool biased = name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  Options o;
  o.level = biased ? name.substr(0, name.size() - suffix.size()) : name;
  std::string pipeline;
  try {
    pipeline = levelPipeline(o.level);
  } catch (const std::exception&) {
    throw UsageError("unknown level '" + name + "' (L0..L5, or L1..L5 with -biased)");
  }
  if (biased) {
    const std::string pass = ",debias-backward";
    const size_t at = pipeline.find(pass);
    if (at == std::string::npos) throw UsageError("level '" + o.level + "' has no debias-backward to leave out");
    o.passes = pipeline.erase(at, pass.size());
  }
  return o;
}

std::string parityModels() {
  return "resnet18,resnet50,mobilenet_v2,mobilenet_v3_small,densenet121,vgg11_bn,squeezenet1_0,efficientnet_b0,"
         "regnet_x_400mf,shufflenet_v2_x0_5,mnasnet0_5,convnext_tiny,vit_b_16";
}

int64_t scriptedImageSize(const std::string& model, int64_t requested) {
  return model == "vit_b_16" ? 64 : requested;
}

int64_t stateBytes(const torch::jit::Module& m) {
  int64_t bytes = 0;
  for (const auto& p : m.parameters()) bytes += int64_t(p.nbytes());
  for (const auto& b : m.buffers()) bytes += int64_t(b.nbytes());
  return bytes;
}

std::vector<std::string> splitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) out.push_back(item);
  return out;
}

void setThreads(int64_t threads) {
  if (threads < 0) throw UsageError("--threads must be >= 0");
  if (threads > 0) at::set_num_threads(int(threads));
}

at::Tensor ModelFlags::input() const {
  at::manual_seed(0);
  return at::randn({batch, channels, image, image});
}

torch::jit::Module loadModel(const std::string& name) {
  std::string path = name;
  if (onnx::isModelPath(path)) {
    if (!exists(path)) throw UsageError("no such ONNX model '" + path + "'");
    torch::jit::Module m = onnx::importFile(path);
    m.train();
    return m;
  }
  if (name.size() < 3 || name.compare(name.size() - 3, 3, ".pt") != 0) {
    const char* env = std::getenv("ACTNN_MODELS_DIR");
    const std::string dir = env && *env ? env : ACTNN_BENCH_MODELS_DIR;
    path = dir + "/" + name + ".pt";
    if (!exists(path)) {
      const char* script = name == "fashion_resnet" ? ACTNN_EXAMPLE_MODEL_SCRIPT : ACTNN_EXPORT_SCRIPT;
      const std::string cmd =
          "/usr/bin/python3 " + shellQuote(script) + " " + shellQuote(dir) + " " + shellQuote(name) + " >&2";
      if (std::system(cmd.c_str()) != 0 || !exists(path))
        throw UsageError("cannot script model '" + name + "' (ran: " + cmd + ")");
    }
  }
  if (!exists(path)) throw UsageError("no such model archive '" + path + "'");
  torch::jit::Module m = torch::jit::load(path);
  m.train();
  return m;
}

torch::jit::Module modelAtLevel(const std::string& name, const std::string& level) {
  torch::jit::Module m = loadModel(name);
  if (level == "fp") return m;
  Options options;
  options.level = level;
  return compile(m, options);
}

void dropGrads(torch::jit::Module& module) {
  for (const auto& p : module.parameters()) p.mutable_grad() = at::Tensor();
}

void trainingStep(torch::jit::Module& module, const at::Tensor& input) {
  dropGrads(module);
  at::Tensor loss = module.forward({input}).toTensor().sum();
  loss.backward();
}

}  // namespace tools
}  // namespace actnn
