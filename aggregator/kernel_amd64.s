//go:build !purego

#include "textflag.h"

// AVX2 versions of the loops in kernel.go; see kernel_amd64.go for their
// contracts and "Batches" and "Throughput" in DESIGN.md for the design. Every product is
// rounded before it is added (VMULPD, then VADDPD; never an FMA), and the
// float32 to float64 conversion (VCVTPS2PD) is exact, so each result is the
// same bits as the Go loop's. Y15 and X15 are left alone (X15 is the zero
// register of Go's internal ABI).

// func foldToAVX2(dst, src []float64, x []float32, w float64) bool
//
// dst may be src: each iteration reads its values of src before it
// writes those of dst, and never reads a value of src after its value of
// dst was written (TestFoldToAliased).
TEXT ·foldToAVX2(SB), NOSPLIT, $0-81
	MOVQ         dst_base+0(FP), DI
	MOVQ         dst_len+8(FP), CX
	MOVQ         src_base+24(FP), SI
	MOVQ         x_base+48(FP), DX
	VBROADCASTSD w+72(FP), Y12

	// Y8-Y11 are the check accumulators: 0, times each new sum. They stay
	// ±0 while the sums are finite and turn NaN, for good, at the first
	// infinite or NaN one.
	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	VXORPD Y10, Y10, Y10
	VXORPD Y11, Y11, Y11

foldTo32:
	CMPQ      CX, $32
	JB        foldTo4
	VCVTPS2PD (DX), Y0
	VCVTPS2PD 16(DX), Y1
	VCVTPS2PD 32(DX), Y2
	VCVTPS2PD 48(DX), Y3
	VCVTPS2PD 64(DX), Y4
	VCVTPS2PD 80(DX), Y5
	VCVTPS2PD 96(DX), Y6
	VCVTPS2PD 112(DX), Y7
	VMULPD    Y12, Y0, Y0
	VMULPD    Y12, Y1, Y1
	VMULPD    Y12, Y2, Y2
	VMULPD    Y12, Y3, Y3
	VMULPD    Y12, Y4, Y4
	VMULPD    Y12, Y5, Y5
	VMULPD    Y12, Y6, Y6
	VMULPD    Y12, Y7, Y7
	VADDPD    (SI), Y0, Y0
	VADDPD    32(SI), Y1, Y1
	VADDPD    64(SI), Y2, Y2
	VADDPD    96(SI), Y3, Y3
	VADDPD    128(SI), Y4, Y4
	VADDPD    160(SI), Y5, Y5
	VADDPD    192(SI), Y6, Y6
	VADDPD    224(SI), Y7, Y7
	VMOVUPD   Y0, (DI)
	VMOVUPD   Y1, 32(DI)
	VMOVUPD   Y2, 64(DI)
	VMOVUPD   Y3, 96(DI)
	VMOVUPD   Y4, 128(DI)
	VMOVUPD   Y5, 160(DI)
	VMOVUPD   Y6, 192(DI)
	VMOVUPD   Y7, 224(DI)
	VMULPD    Y0, Y8, Y8
	VMULPD    Y1, Y9, Y9
	VMULPD    Y2, Y10, Y10
	VMULPD    Y3, Y11, Y11
	VMULPD    Y4, Y8, Y8
	VMULPD    Y5, Y9, Y9
	VMULPD    Y6, Y10, Y10
	VMULPD    Y7, Y11, Y11
	ADDQ      $128, DX
	ADDQ      $256, SI
	ADDQ      $256, DI
	SUBQ      $32, CX
	JMP       foldTo32

foldTo4:
	CMPQ      CX, $4
	JB        foldToDone
	VCVTPS2PD (DX), Y0
	VMULPD    Y12, Y0, Y0
	VADDPD    (SI), Y0, Y0
	VMOVUPD   Y0, (DI)
	VMULPD    Y0, Y8, Y8
	ADDQ      $16, DX
	ADDQ      $32, SI
	ADDQ      $32, DI
	SUBQ      $4, CX
	JMP       foldTo4

foldToDone:
	// Every lane of every accumulator is ±0 exactly when all sums were
	// finite; NaN times anything stays NaN.
	VMULPD    Y9, Y8, Y8
	VMULPD    Y11, Y10, Y10
	VMULPD    Y10, Y8, Y8
	VXORPD    Y0, Y0, Y0
	VCMPPD    $0, Y0, Y8, Y8 // lanes equal to ±0 (ordered compare, so NaN is not)
	VMOVMSKPD Y8, AX
	CMPL      AX, $0x0f
	SETEQ     ret+80(FP)
	VZEROUPPER
	RET

// func foldInAVX2(sum []float64, x []float32, w float64)
TEXT ·foldInAVX2(SB), NOSPLIT, $0-56
	MOVQ         sum_base+0(FP), DI
	MOVQ         sum_len+8(FP), CX
	MOVQ         x_base+24(FP), DX
	VBROADCASTSD w+48(FP), Y12

foldIn32:
	CMPQ      CX, $32
	JB        foldIn4
	VCVTPS2PD (DX), Y0
	VCVTPS2PD 16(DX), Y1
	VCVTPS2PD 32(DX), Y2
	VCVTPS2PD 48(DX), Y3
	VCVTPS2PD 64(DX), Y4
	VCVTPS2PD 80(DX), Y5
	VCVTPS2PD 96(DX), Y6
	VCVTPS2PD 112(DX), Y7
	VMULPD    Y12, Y0, Y0
	VMULPD    Y12, Y1, Y1
	VMULPD    Y12, Y2, Y2
	VMULPD    Y12, Y3, Y3
	VMULPD    Y12, Y4, Y4
	VMULPD    Y12, Y5, Y5
	VMULPD    Y12, Y6, Y6
	VMULPD    Y12, Y7, Y7
	VADDPD    (DI), Y0, Y0
	VADDPD    32(DI), Y1, Y1
	VADDPD    64(DI), Y2, Y2
	VADDPD    96(DI), Y3, Y3
	VADDPD    128(DI), Y4, Y4
	VADDPD    160(DI), Y5, Y5
	VADDPD    192(DI), Y6, Y6
	VADDPD    224(DI), Y7, Y7
	VMOVUPD   Y0, (DI)
	VMOVUPD   Y1, 32(DI)
	VMOVUPD   Y2, 64(DI)
	VMOVUPD   Y3, 96(DI)
	VMOVUPD   Y4, 128(DI)
	VMOVUPD   Y5, 160(DI)
	VMOVUPD   Y6, 192(DI)
	VMOVUPD   Y7, 224(DI)
	ADDQ      $128, DX
	ADDQ      $256, DI
	SUBQ      $32, CX
	JMP       foldIn32

foldIn4:
	CMPQ      CX, $4
	JB        foldInDone
	VCVTPS2PD (DX), Y0
	VMULPD    Y12, Y0, Y0
	VADDPD    (DI), Y0, Y0
	VMOVUPD   Y0, (DI)
	ADDQ      $16, DX
	ADDQ      $32, DI
	SUBQ      $4, CX
	JMP       foldIn4

foldInDone:
	VZEROUPPER
	RET

// func finite32AVX2(x []float32) bool
//
// A float32 is infinite or NaN exactly when its exponent bits are all
// ones: each lane is masked to its exponent and compared with the mask,
// and the all-ones results of the compare are ORed together. Integer
// operations, so no float input (subnormals included) can slow it down.
TEXT ·finite32AVX2(SB), NOSPLIT, $0-25
	MOVQ         x_base+0(FP), SI
	MOVQ         x_len+8(FP), CX
	MOVL         $0x7f800000, AX
	MOVQ         AX, X12
	VPBROADCASTD X12, Y12
	VPXOR        Y8, Y8, Y8
	VPXOR        Y9, Y9, Y9
	VPXOR        Y10, Y10, Y10
	VPXOR        Y11, Y11, Y11

finite64:
	CMPQ     CX, $64
	JB       finite8
	VPAND    (SI), Y12, Y0
	VPAND    32(SI), Y12, Y1
	VPAND    64(SI), Y12, Y2
	VPAND    96(SI), Y12, Y3
	VPAND    128(SI), Y12, Y4
	VPAND    160(SI), Y12, Y5
	VPAND    192(SI), Y12, Y6
	VPAND    224(SI), Y12, Y7
	VPCMPEQD Y12, Y0, Y0
	VPCMPEQD Y12, Y1, Y1
	VPCMPEQD Y12, Y2, Y2
	VPCMPEQD Y12, Y3, Y3
	VPCMPEQD Y12, Y4, Y4
	VPCMPEQD Y12, Y5, Y5
	VPCMPEQD Y12, Y6, Y6
	VPCMPEQD Y12, Y7, Y7
	VPOR     Y0, Y8, Y8
	VPOR     Y1, Y9, Y9
	VPOR     Y2, Y10, Y10
	VPOR     Y3, Y11, Y11
	VPOR     Y4, Y8, Y8
	VPOR     Y5, Y9, Y9
	VPOR     Y6, Y10, Y10
	VPOR     Y7, Y11, Y11
	ADDQ     $256, SI
	SUBQ     $64, CX
	JMP      finite64

finite8:
	CMPQ     CX, $8
	JB       finiteDone
	VPAND    (SI), Y12, Y0
	VPCMPEQD Y12, Y0, Y0
	VPOR     Y0, Y8, Y8
	ADDQ     $32, SI
	SUBQ     $8, CX
	JMP      finite8

finiteDone:
	VPOR  Y9, Y8, Y8
	VPOR  Y11, Y10, Y10
	VPOR  Y10, Y8, Y8
	VPTEST Y8, Y8
	SETEQ ret+24(FP)
	VZEROUPPER
	RET

// func foldKAVX2(dst, src []float64, xs [][]float32, ws []float64, off int, nt bool) bool
//
// dst[i] = src[i] + ws[0]·xs[0][off+i] + ws[1]·xs[1][off+i] + ..., added
// in that order, each product rounded before it is added: the bits of
// foldTo for the first update followed by foldTo(dst, dst, ...) for each
// other. The sums stay in registers until the last update is added, so
// dst is written once; with nt the stores are non-temporal (dst must then
// be 32-byte aligned). The check is foldTo's, on the final sums: a sum is
// finite exactly when every product added into it was (|sum| stays far
// below the float64 range), and an infinite or NaN sum stays so after
// more additions.
TEXT ·foldKAVX2(SB), NOSPLIT, $0-113
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	MOVQ xs_base+48(FP), R8
	MOVQ xs_len+56(FP), R9
	MOVQ ws_base+72(FP), R10
	MOVQ off+96(FP), BX
	SHLQ $2, BX // byte offset into each x
	MOVBLZX nt+104(FP), AX

	VXORPD Y8, Y8, Y8
	VXORPD Y9, Y9, Y9
	VXORPD Y10, Y10, Y10
	VXORPD Y11, Y11, Y11

foldK16:
	CMPQ    CX, $16
	JB      foldK4
	VMOVUPD (SI), Y0
	VMOVUPD 32(SI), Y1
	VMOVUPD 64(SI), Y2
	VMOVUPD 96(SI), Y3
	MOVQ    R8, R11
	MOVQ    R10, R12
	MOVQ    R9, R13

foldK16x:
	MOVQ         (R11), DX
	VBROADCASTSD (R12), Y12
	VCVTPS2PD    (DX)(BX*1), Y4
	VCVTPS2PD    16(DX)(BX*1), Y5
	VCVTPS2PD    32(DX)(BX*1), Y6
	VCVTPS2PD    48(DX)(BX*1), Y7
	VMULPD       Y12, Y4, Y4
	VMULPD       Y12, Y5, Y5
	VMULPD       Y12, Y6, Y6
	VMULPD       Y12, Y7, Y7
	VADDPD       Y0, Y4, Y0
	VADDPD       Y1, Y5, Y1
	VADDPD       Y2, Y6, Y2
	VADDPD       Y3, Y7, Y3
	ADDQ         $24, R11
	ADDQ         $8, R12
	DECQ         R13
	JNZ          foldK16x

	TESTQ    AX, AX
	JNZ      foldK16nt
	VMOVUPD  Y0, (DI)
	VMOVUPD  Y1, 32(DI)
	VMOVUPD  Y2, 64(DI)
	VMOVUPD  Y3, 96(DI)
	JMP      foldK16next

foldK16nt:
	VMOVNTPD Y0, (DI)
	VMOVNTPD Y1, 32(DI)
	VMOVNTPD Y2, 64(DI)
	VMOVNTPD Y3, 96(DI)

foldK16next:
	VMULPD Y0, Y8, Y8
	VMULPD Y1, Y9, Y9
	VMULPD Y2, Y10, Y10
	VMULPD Y3, Y11, Y11
	ADDQ   $64, BX
	ADDQ   $128, SI
	ADDQ   $128, DI
	SUBQ   $16, CX
	JMP    foldK16

foldK4:
	CMPQ    CX, $4
	JB      foldKDone
	VMOVUPD (SI), Y0
	MOVQ    R8, R11
	MOVQ    R10, R12
	MOVQ    R9, R13

foldK4x:
	MOVQ         (R11), DX
	VBROADCASTSD (R12), Y12
	VCVTPS2PD    (DX)(BX*1), Y4
	VMULPD       Y12, Y4, Y4
	VADDPD       Y0, Y4, Y0
	ADDQ         $24, R11
	ADDQ         $8, R12
	DECQ         R13
	JNZ          foldK4x

	TESTQ    AX, AX
	JNZ      foldK4nt
	VMOVUPD  Y0, (DI)
	JMP      foldK4next

foldK4nt:
	VMOVNTPD Y0, (DI)

foldK4next:
	VMULPD Y0, Y8, Y8
	ADDQ   $16, BX
	ADDQ   $32, SI
	ADDQ   $32, DI
	SUBQ   $4, CX
	JMP    foldK4

foldKDone:
	TESTQ     AX, AX
	JZ        foldKCheck
	SFENCE

foldKCheck:
	VMULPD    Y9, Y8, Y8
	VMULPD    Y11, Y10, Y10
	VMULPD    Y10, Y8, Y8
	VXORPD    Y0, Y0, Y0
	VCMPPD    $0, Y0, Y8, Y8
	VMOVMSKPD Y8, AX
	CMPL      AX, $0x0f
	SETEQ     ret+112(FP)
	VZEROUPPER
	RET
