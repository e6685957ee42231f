#pragma once
// Errors carry their context as text; lib/ never exits the process.
#include <stdexcept>
#include <string>

namespace mm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// MM_CHECK(cond, msg-expression): throws mm::Error with the message when cond fails.
#define MM_CHECK(cond, msg)                                   \
  do {                                                        \
    if (!(cond)) throw ::mm::Error(std::string(msg));         \
  } while (0)

}  // namespace mm
