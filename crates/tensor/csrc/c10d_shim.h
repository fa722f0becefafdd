// C ABI over libtorch's c10d (TCPStore + ProcessGroupGloo / ProcessGroupNCCL),
// used by `crates/tensor/src/distributed.rs`.
//
// Every function catches C++ exceptions: a failure returns NULL or a non-zero
// status and sets `*err` to a malloc'd message, freed with
// `lmzh_c10d_free_error`. No exception ever unwinds into Rust.
//
// Tensors are passed as `at::Tensor*` (what tch's `C_tensor` pointer is:
// torch-sys `libtch/torch_api.h`, `typedef torch::Tensor *tensor;`).
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmzh_c10d_group lmzh_c10d_group;

// Backend kinds.
#define LMZH_C10D_GLOO 0
#define LMZH_C10D_NCCL 1

// Reduce ops. AVG is done as SUM followed by a division on Gloo, which has
// no AVG of its own.
#define LMZH_C10D_SUM 0
#define LMZH_C10D_AVG 1

// Rendezvous through a TCPStore at host:port and create a process group of
// `world` ranks. With `host_store` non-zero, rank 0 hosts the store;
// otherwise it is already there (torchrun's agent store) and every rank is a
// client. A non-NULL `prefix` namespaces the keys (torchrun:
// "/worker/attempt_N"). `timeout_ms` bounds the rendezvous and every later
// collective.
lmzh_c10d_group* lmzh_c10d_new(
    const char* host,
    uint16_t port,
    int rank,
    int world,
    int backend,
    int64_t timeout_ms,
    int host_store,
    const char* prefix,
    char** err);

// All-reduce each of the `n` tensors in place (one collective per tensor, all
// in flight at once, then waited for). Returns 0 on success.
int lmzh_c10d_allreduce(
    lmzh_c10d_group* group,
    void* const* tensors,
    size_t n,
    int op,
    char** err);

// Broadcast each of the `n` tensors in place from rank `root`.
int lmzh_c10d_broadcast(
    lmzh_c10d_group* group,
    void* const* tensors,
    size_t n,
    int root,
    char** err);

// Block until every rank has reached the barrier (or the timeout).
int lmzh_c10d_barrier(lmzh_c10d_group* group, char** err);

// Shut the backend down and free the group and its store.
void lmzh_c10d_free(lmzh_c10d_group* group);

void lmzh_c10d_free_error(char* err);

// 1 when this build can create NCCL process groups.
int lmzh_c10d_has_nccl(void);

#ifdef __cplusplus
} // extern "C"
#endif
