// C ABI over libtorch's autocast state (ATen/autocast_mode.h), for any device
// type: tch only reaches the CUDA one. Used by `crates/tensor/src/amp.rs`.
//
// `lmzh_autocast_enter` enables autocast for a device type with a dtype and
// returns the previous state in `prev_enabled`/`prev_dtype`, which
// `lmzh_autocast_exit` restores. Nesting is counted as torch.autocast does,
// and the cast cache is cleared when the outermost region ends. Neither
// function throws: a failure returns non-zero.
#include <ATen/autocast_mode.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace {
bool device_type(int code, c10::DeviceType* out) {
  switch (code) {
    case 0: *out = c10::DeviceType::CPU; return true;
    case 1: *out = c10::DeviceType::CUDA; return true;
    default: return false;
  }
}
}  // namespace

extern "C" int lmzh_autocast_enter(int device, int dtype, int* prev_enabled, int* prev_dtype) {
  try {
    c10::DeviceType d;
    if (!device_type(device, &d)) return 1;
    *prev_enabled = at::autocast::is_autocast_enabled(d) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(d));
    at::autocast::set_autocast_enabled(d, true);
    at::autocast::set_autocast_dtype(d, static_cast<c10::ScalarType>(dtype));
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return 2;
  }
}

extern "C" int lmzh_autocast_exit(int device, int prev_enabled, int prev_dtype) {
  try {
    c10::DeviceType d;
    if (!device_type(device, &d)) return 1;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(d, prev_enabled != 0);
    at::autocast::set_autocast_dtype(d, static_cast<c10::ScalarType>(prev_dtype));
    return 0;
  } catch (...) {
    return 2;
  }
}

extern "C" int lmzh_autocast_is_enabled(int device) {
  try {
    c10::DeviceType d;
    if (!device_type(device, &d)) return -1;
    return at::autocast::is_autocast_enabled(d) ? 1 : 0;
  } catch (...) {
    return -1;
  }
}
