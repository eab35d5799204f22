// actnn-opt: the command-line rewriter (`actnn-opt --help`).
#include <iostream>

#include "opt.h"

int main(int argc, char** argv) { return actnn::tools::optMain(argc, argv, std::cout, std::cerr); }
