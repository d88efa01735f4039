/* A stand-in for libnccl.so.2 that tests/gpu_check.sh puts on the library path of a GPU machine
 * lacking NCCL, so that sparse-repro (which links NCCL for SPARSE_REDUCER=nccl) still starts for
 * every other check. Each entry point fails with ncclSystemError; the NCCL step is skipped. */
#include <nccl.h>

static const char kMessage[] =
    "libnccl.so.2 is not installed on this machine (the stub of tests/gpu_nccl_stub.c answered)";

ncclResult_t ncclGetUniqueId(ncclUniqueId* unique_id) {
  (void)unique_id;
  return ncclSystemError;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId comm_id, int rank) {
  (void)comm;
  (void)nranks;
  (void)comm_id;
  (void)rank;
  return ncclSystemError;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  (void)comm;
  return ncclSystemError;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count,
                           ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                           cudaStream_t stream) {
  (void)sendbuff;
  (void)recvbuff;
  (void)count;
  (void)datatype;
  (void)op;
  (void)comm;
  (void)stream;
  return ncclSystemError;
}

const char* ncclGetErrorString(ncclResult_t result) {
  (void)result;
  return kMessage;
}
