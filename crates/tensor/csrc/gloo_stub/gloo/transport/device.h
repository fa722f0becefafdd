// Stand-in for gloo/transport/device.h: see ../README.md. Only ever held
// behind std::shared_ptr / std::unique_ptr.
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
