# lit configuration for actnn: tests are *.test / *.tsir / *.onnxtxt files under
# tests/lit whose RUN lines call actnn's tools and check their output with
# FileCheck. Run through ctest ("lit") or directly:
#   /usr/bin/python3 /usr/lib/llvm-14/build/utils/lit/lit.py -sv build/tests/lit
import os

import lit.formats

config.name = "actnn"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".test", ".tsir", ".onnxtxt"]
config.excludes = ["Inputs", "lit.cfg.py", "lit.site.cfg.py.in", "CMakeLists.txt"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.actnn_obj_root, "tests", "lit")

# Our tools first, then FileCheck / not / count from LLVM 14.
config.environment["PATH"] = os.pathsep.join(
    [config.actnn_tools_dir, config.llvm_tools_dir, config.environment.get("PATH", "")])
config.environment["LD_LIBRARY_PATH"] = config.actnn_lib_dir
# %python scripts test modules (Debian's torch); %runpython loads our
# libraries (the torch they were built against).
config.substitutions.append(("%runpython", config.run_python_executable))
config.substitutions.append(("%python", config.python_executable))
config.substitutions.append(("%actnn_lib", config.actnn_lib_dir))
config.substitutions.append(("%actnn_src", config.actnn_src_root))
# REQUIRES: torch2 -- ops that LibTorch 1.13 does not have
# (scaled_dot_product_attention, rms_norm).
if int(config.torch_version.split(".")[0] or 0) >= 2:
    config.available_features.add("torch2")
