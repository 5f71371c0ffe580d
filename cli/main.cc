#include "cli/app.h"

int main(int argc, char** argv) { return fqpack::cli::Main(argc, argv); }
