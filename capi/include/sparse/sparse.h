/*
 * libsparse: the Sparse Transformer library (Child et al., 2019) - umbrella header.
 * Link with `pkg-config --cflags --libs sparse`.
 */
#ifndef SPARSE_SPARSE_H
#define SPARSE_SPARSE_H

#include "sparse/attention.h"
#include "sparse/common.h"
#include "sparse/context.h"
#include "sparse/datasets.h"
#include "sparse/layout.h"
#include "sparse/model.h"
#include "sparse/version.h"

#endif /* SPARSE_SPARSE_H */
