/*
 * libsparse: API version.
 *
 * meson.build reads the three numbers below to set the project version and the shared
 * library's soname (libsparse.so.<MAJOR>), so this header is the single source of truth.
 * MAJOR changes on any ABI break, MINOR when functions or struct fields are added,
 * PATCH for fixes that change no declaration.
 */
#ifndef SPARSE_VERSION_H
#define SPARSE_VERSION_H

#define SPARSE_API_VERSION_MAJOR 0
#define SPARSE_API_VERSION_MINOR 5
#define SPARSE_API_VERSION_PATCH 0

/* Packed as (major << 16) | (minor << 8) | patch, comparable with sparse_api_version(). */
#define SPARSE_API_VERSION \
  ((SPARSE_API_VERSION_MAJOR << 16) | (SPARSE_API_VERSION_MINOR << 8) | SPARSE_API_VERSION_PATCH)

#endif /* SPARSE_VERSION_H */
