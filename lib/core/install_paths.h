#pragma once
// Where an installed or copied toolkit finds its data: relative to the running
// executable, so that the tools work wherever they are installed or copied
// (cmake --install, the .deb, a tarball unpacked anywhere). The layout is
// <prefix>/bin/<tool> and <prefix>/share/medmamba/... (CMakeLists.txt installs it).
#include <string>

namespace mm {

// The folder holding the running executable (from /proc/self/exe); empty when unknown.
std::string executable_dir();

// <executable_dir>/../share/medmamba, lexically normalised; empty when the executable is unknown.
std::string installed_share_dir();

}  // namespace mm
