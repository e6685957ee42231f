#pragma once
// MM_VECTORISE_COMPARISONS on a function lets GCC vectorise its loops that hold
// comparisons (a window's clamps, NaN -> 0): while it models floating-point
// traps (-ftrapping-math, its default) it keeps them scalar, though nothing here
// reads the floating-point status flags. Measured on a 512 x 512 slice: the
// window pass 0.22 -> 0.05 ms. Clang vectorises them as they are.
#if defined(__GNUC__) && !defined(__clang__)
#define MM_VECTORISE_COMPARISONS __attribute__((optimize("no-trapping-math")))
#else
#define MM_VECTORISE_COMPARISONS
#endif
