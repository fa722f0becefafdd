// c10d (PyTorch's distributed engine, as shipped in libtorch) behind a C ABI:
// see c10d_shim.h.
//
// Gloo: the PyPI wheel is built with USE_C10D_GLOO and exports
// c10d::ProcessGroupGloo from libtorch_cpu.so, but ships no gloo headers.
// ProcessGroupGloo.hpp is therefore parsed against the declarations in
// gloo_stub/ (see its README.md): this file only creates the group through
// exported functions and calls it through c10d::Backend's virtual
// functions, never touching a gloo object itself.
//
// NCCL: created in c10d_nccl.cpp, compiled only when the CUDA toolkit and
// NCCL headers are found (LMZH_HAVE_NCCL); see crates/tensor/build.rs.

#include "c10d_shim.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#ifdef LMZH_HAVE_NCCL
// Defined in c10d_nccl.cpp.
c10::intrusive_ptr<c10d::Backend> lmzh_c10d_make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout);
#endif

struct lmzh_c10d_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
  int backend_kind;
  int world;
};

namespace {

void set_error(char** err, const std::string& msg) {
  if (err == nullptr) {
    return;
  }
  char* s = static_cast<char*>(std::malloc(msg.size() + 1));
  if (s != nullptr) {
    std::memcpy(s, msg.c_str(), msg.size() + 1);
  }
  *err = s;
}

// Runs `f`, turning any C++ exception into an error message.
template <typename F>
bool guarded(char** err, F&& f) {
  try {
    f();
    return true;
  } catch (const c10::Error& e) {
    set_error(err, e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_error(err, e.what());
  } catch (...) {
    set_error(err, "unknown C++ exception in c10d");
  }
  return false;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

c10::intrusive_ptr<c10d::Backend> make_gloo(
    const c10::intrusive_ptr<c10d::Store>& store,
    const std::string& host,
    int rank,
    int world,
    std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // As torch.distributed does: GLOO_SOCKET_IFNAME names the interface; else
  // a loopback rendezvous stays on loopback, and anything else binds to the
  // address this machine's hostname resolves to.
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  if (ifname != nullptr && *ifname != '\0') {
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (is_loopback(host)) {
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDefaultDevice());
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(
      store, rank, world, options);
}

std::vector<at::Tensor> tensors_of(void* const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(tensors[i] != nullptr, "tensor ", i, " is null");
    out.push_back(*static_cast<at::Tensor*>(tensors[i]));
  }
  return out;
}

// Waits for every work item (all of them, even after a failure, so that no
// collective is left running on tensors the caller may free), then rethrows
// the first error.
void wait_all(
    std::vector<c10::intrusive_ptr<c10d::Work>>& works,
    std::chrono::milliseconds timeout) {
  std::exception_ptr first;
  for (auto& w : works) {
    try {
      w->wait(timeout);
    } catch (...) {
      if (!first) {
        first = std::current_exception();
      }
    }
  }
  if (first) {
    std::rethrow_exception(first);
  }
}

} // namespace

extern "C" {

lmzh_c10d_group* lmzh_c10d_new(
    const char* host,
    uint16_t port,
    int rank,
    int world,
    int backend,
    int64_t timeout_ms,
    int host_store,
    const char* prefix,
    char** err) {
  lmzh_c10d_group* group = nullptr;
  guarded(err, [&] {
    TORCH_CHECK(host != nullptr, "no host");
    TORCH_CHECK(world >= 1, "world size ", world, " < 1");
    TORCH_CHECK(rank >= 0 && rank < world, "rank ", rank, " not in 0..", world);
    TORCH_CHECK(timeout_ms > 0, "timeout must be positive");
    const std::chrono::milliseconds timeout(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = port;
    // As torch.distributed's env:// rendezvous does: rank 0 hosts a
    // multi-tenant store, unless torchrun's agent already hosts one there.
    opts.isServer = host_store != 0 && rank == 0;
    opts.multiTenant = opts.isServer;
    opts.numWorkers = static_cast<size_t>(world);
    opts.waitWorkers = host_store != 0;
    opts.timeout = timeout;
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    if (prefix != nullptr) {
      store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    }
    c10::intrusive_ptr<c10d::Backend> pg;
    if (backend == LMZH_C10D_GLOO) {
      pg = make_gloo(store, host, rank, world, timeout);
    } else if (backend == LMZH_C10D_NCCL) {
#ifdef LMZH_HAVE_NCCL
      pg = lmzh_c10d_make_nccl(store, rank, world, timeout);
#else
      TORCH_CHECK(
          false,
          "this build has no NCCL support (the CUDA toolkit or NCCL headers "
          "were not found when the tensor crate was built)");
#endif
    } else {
      TORCH_CHECK(false, "unknown backend ", backend);
    }
    group = new lmzh_c10d_group{store, pg, timeout, backend, world};
  });
  return group;
}

int lmzh_c10d_allreduce(
    lmzh_c10d_group* group,
    void* const* tensors,
    size_t n,
    int op,
    char** err) {
  bool ok = guarded(err, [&] {
    TORCH_CHECK(group != nullptr, "process group is closed");
    TORCH_CHECK(
        op == LMZH_C10D_SUM || op == LMZH_C10D_AVG, "unknown reduce op ", op);
    auto ts = tensors_of(tensors, n);
    const bool native_avg =
        op == LMZH_C10D_AVG && group->backend_kind == LMZH_C10D_NCCL;
    c10d::AllreduceOptions opts;
    opts.reduceOp = native_avg ? c10d::ReduceOp::AVG : c10d::ReduceOp::SUM;
    opts.timeout = group->timeout;
    std::vector<std::vector<at::Tensor>> lists;
    lists.reserve(ts.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(ts.size());
    for (auto& t : ts) {
      lists.push_back({t});
      works.push_back(group->backend->allreduce(lists.back(), opts));
    }
    wait_all(works, group->timeout);
    if (op == LMZH_C10D_AVG && !native_avg && group->world > 1) {
      for (auto& t : ts) {
        t.div_(group->world);
      }
    }
  });
  return ok ? 0 : 1;
}

int lmzh_c10d_broadcast(
    lmzh_c10d_group* group,
    void* const* tensors,
    size_t n,
    int root,
    char** err) {
  bool ok = guarded(err, [&] {
    TORCH_CHECK(group != nullptr, "process group is closed");
    TORCH_CHECK(
        root >= 0 && root < group->world, "root ", root, " is not a rank");
    auto ts = tensors_of(tensors, n);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = group->timeout;
    std::vector<std::vector<at::Tensor>> lists;
    lists.reserve(ts.size());
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    works.reserve(ts.size());
    for (auto& t : ts) {
      lists.push_back({t});
      works.push_back(group->backend->broadcast(lists.back(), opts));
    }
    wait_all(works, group->timeout);
  });
  return ok ? 0 : 1;
}

int lmzh_c10d_barrier(lmzh_c10d_group* group, char** err) {
  bool ok = guarded(err, [&] {
    TORCH_CHECK(group != nullptr, "process group is closed");
    c10d::BarrierOptions opts;
    opts.timeout = group->timeout;
    auto work = group->backend->barrier(opts);
    work->wait(group->timeout);
  });
  return ok ? 0 : 1;
}

void lmzh_c10d_free(lmzh_c10d_group* group) {
  if (group == nullptr) {
    return;
  }
  guarded(nullptr, [&] { group->backend->shutdown(); });
  guarded(nullptr, [&] {
    group->backend.reset();
    group->store.reset();
  });
  delete group;
}

void lmzh_c10d_free_error(char* err) {
  std::free(err);
}

int lmzh_c10d_has_nccl(void) {
#ifdef LMZH_HAVE_NCCL
  return 1;
#else
  return 0;
#endif
}

} // extern "C"
