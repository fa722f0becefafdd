// Stand-in for gloo/context.h: see README.md in this folder.
#pragma once
#include <chrono>

namespace gloo {
// Declared only: ProcessGroupGloo::setTimeout (inline, never called by the
// shim) names this member.
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
