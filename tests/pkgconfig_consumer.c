/* A C99 program that uses the installed library through pkg-config. */
#include <sparse/sparse.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  sparse_settings settings;
  sparse_context* context = NULL;
  sparse_backend backend;
  if (sparse_api_version() != SPARSE_API_VERSION) {
    fprintf(stderr, "header/library version mismatch\n");
    return 1;
  }
  sparse_settings_default(&settings);
  settings.backend = SPARSE_BACKEND_CPU;
  if (sparse_context_create(&settings, &context) != SPARSE_OK) {
    fprintf(stderr, "context: %s\n", sparse_last_error());
    return 1;
  }
  sparse_context_backend(context, &backend);
  printf("libsparse %s, backend %s\n", sparse_version_string(), sparse_backend_name(backend));
  sparse_context_destroy(context);
  if (sparse_context_create(&settings, NULL) != SPARSE_ERR_INVALID_ARGUMENT ||
      strstr(sparse_last_error(), "out is NULL") == NULL) {
    fprintf(stderr, "expected an invalid-argument error\n");
    return 1;
  }
  return 0;
}
