// Include Eigen through this header. GCC 12 reports -Wmaybe-uninitialized false positives inside
// its own AVX-512 intrinsics when Eigen's packet math is inlined with -march=native (GCC bug
// 105593; with sanitizers it is reported as -Wuninitialized). The warning fires at the point of
// inlining, so it has to be silenced for the whole translation unit that includes this header;
// every other warning stays an error.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"  // the same false positive under -fsanitize
#endif
#include <Eigen/Core>
