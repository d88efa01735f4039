/* backend_probe BACKEND: creates a context on BACKEND (auto, cpu or cuda) through the C ABI and
 * prints one line for tests/test_cuda_module.py:
 *   status=<sparse_context_create's status> backend=<the context's backend or ->
 *   available=<sparse_backend_available> compiled=<...> reason=<...> message=<sparse_last_error>
 * It exits 0 whenever the library returned, so another exit status means the process ended
 * inside the library (a missing shared library, an address-space limit at load time). */
#include <sparse/experimental.h>
#include <sparse/sparse.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char** argv) {
  sparse_settings settings;
  sparse_context* context = NULL;
  sparse_backend backend = SPARSE_BACKEND_AUTO;
  sparse_backend actual = SPARSE_BACKEND_AUTO;
  sparse_status status;
  char message[2048];
  const char* reason = "";
  int available = -1, compiled = -1;
  if (argc != 2 || sparse_backend_from_name(argv[1], &backend) != SPARSE_OK) {
    fprintf(stderr, "usage: backend_probe auto|cpu|cuda\n");
    return 2;
  }
  sparse_settings_default(&settings);
  settings.backend = backend;
  status = sparse_context_create(&settings, &context);
  snprintf(message, sizeof message, "%s", sparse_last_error());
  if (context != NULL) sparse_context_backend(context, &actual);
  sparse_context_destroy(context);
  sparse_backend_available(backend, &available);
  sparse_experimental_backend_status(backend, &compiled, &reason);
  printf("status=%d backend=%s available=%d compiled=%d reason=%s message=%s\n", (int)status,
         context != NULL ? sparse_backend_name(actual) : "-", available, compiled, reason, message);
  return 0;
}
