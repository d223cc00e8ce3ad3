/* The input and output transforms of Winograd F(2x2, 3x3), vectorised across tiles
 * (see _winograd.pyx). Written once for a type T in _winograd_body.h and included
 * for float and double, as the GEMM micro-kernel is.
 *
 * Why vectors of 32 bytes (8 floats, 4 doubles) and not the micro-kernel's 64: a row
 * of tiles is short -- a 16 x 16 output has 8 tiles per row -- and a transform step
 * works along one row of tiles, so a 16-float vector would be half empty. GCC lowers
 * 32-byte vectors to pairs of 16-byte ones where AVX is missing (portable builds).
 */
#ifndef TT_WINOGRAD_H
#define TT_WINOGRAD_H

#define TT_WB 32                          /* bytes per vector in the transforms */
#define TT_WVL_F32 (TT_WB / 4)
#define TT_WVL_F64 (TT_WB / 8)

#define T float
#define TT_INT int
#define TT_WIN_IN tt_wino_in_f32
#define TT_WIN_OUT tt_wino_out_f32
#define TT_SPLIT tt_split_f32
#define TT_MERGE tt_merge_f32
#define TT_WIN_GRAD tt_wino_grad_f32
#define TT_STORE_PART tt_store_part_f32
#define TT_EVENS {0, 2, 4, 6, 8, 10, 12, 14}
#define TT_ODDS {1, 3, 5, 7, 9, 11, 13, 15}
#define TT_LO {0, 8, 1, 9, 2, 10, 3, 11}
#define TT_HI {4, 12, 5, 13, 6, 14, 7, 15}
#include "_winograd_body.h"
#undef T
#undef TT_INT
#undef TT_WIN_IN
#undef TT_WIN_OUT
#undef TT_LO
#undef TT_HI
#undef TT_SPLIT
#undef TT_MERGE
#undef TT_WIN_GRAD
#undef TT_STORE_PART
#undef TT_EVENS
#undef TT_ODDS

#define T double
#define TT_INT long long
#define TT_WIN_IN tt_wino_in_f64
#define TT_WIN_OUT tt_wino_out_f64
#define TT_SPLIT tt_split_f64
#define TT_MERGE tt_merge_f64
#define TT_WIN_GRAD tt_wino_grad_f64
#define TT_STORE_PART tt_store_part_f64
#define TT_EVENS {0, 2, 4, 6}
#define TT_ODDS {1, 3, 5, 7}
#define TT_LO {0, 4, 1, 5}
#define TT_HI {2, 6, 3, 7}
#include "_winograd_body.h"
#undef T
#undef TT_INT
#undef TT_WIN_IN
#undef TT_WIN_OUT
#undef TT_LO
#undef TT_HI
#undef TT_SPLIT
#undef TT_MERGE
#undef TT_WIN_GRAD
#undef TT_STORE_PART
#undef TT_EVENS
#undef TT_ODDS

#endif
