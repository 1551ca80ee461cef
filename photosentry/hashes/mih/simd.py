"""The host's vector features and the LLVM intrinsics the bucket scans use.

numba compiles for this host's CPU; these intrinsics emit LLVM's prefetch, masked
loads, vector popcounts and compress directly, which numba's own code generation does
not. ``VECTOR_SCAN`` says whether the kernels take the vector path on this host.
"""

from __future__ import annotations

import os

try:  # numba is a core dependency; the guard only gives a clear message if it is broken
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError as exc:  # pragma: no cover
    raise ImportError("photosentry needs numba for its hash index: pip install 'numba>=0.60'") from exc


@intrinsic
def _prefetch(typingctx, arr, idx):  # type: ignore[no-untyped-def]
    """Hint the CPU to fetch ``arr[idx]`` into cache (LLVM's prefetch; never faults)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i32 = ir.IntType(32)
        if getattr(ptr.type, "is_opaque", False):  # llvmlite >= 0.45 (opaque pointers)
            name = "llvm.prefetch.p0"
        else:
            name, ptr = "llvm.prefetch.p0i8", builder.bitcast(ptr, ir.IntType(8).as_pointer())
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]),
                                            name)
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, high locality, data cache
        return context.get_dummy_value()

    return sig, codegen


def _host_has_vector_popcount() -> bool:
    """True where the compiled kernels can use 512-bit vector popcounts (AVX-512F and
    VPOPCNTDQ). numba compiles for this host's CPU, so the vector intrinsics below are
    correct everywhere; without these instructions LLVM would emulate them lane by lane,
    slower than the scalar loops, so the kernels take the scalar path there."""
    forced = os.environ.get("PHOTOSENTRY_MIH_VECTOR", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if numba.config.CPU_NAME not in (None, "host"):  # a portable build: no host features
        return False
    try:
        from llvmlite import binding

        features = set(binding.get_host_cpu_features().flatten().split(","))
    except Exception:  # pragma: no cover - an llvmlite that cannot tell: stay scalar
        return False
    return {"+avx512f", "+avx512vpopcntdq"} <= features


#: Whether the kernels scan buckets with vector instructions (16 packed words or 8 codes
#: at a time, no per-word branch). Decided once per process from the host's CPU;
#: ``PHOTOSENTRY_MIH_VECTOR=0`` or ``1`` overrides it (benchmarks, tests).
VECTOR_SCAN = _host_has_vector_popcount()


def _vector(builder, ty, value):  # type: ignore[no-untyped-def]
    """``value`` (an integer) in every lane of vector type ``ty``."""
    i32 = ir.IntType(32)
    lane = ty.element
    if value.type.width > lane.width:
        value = builder.trunc(value, lane)
    elif value.type.width < lane.width:
        value = builder.zext(value, lane)
    one = builder.insert_element(ir.Constant(ty, ir.Undefined), value, i32(0))
    return builder.shuffle_vector(one, ir.Constant(ty, ir.Undefined), ir.Constant(ir.VectorType(i32, ty.count), [0] * ty.count))


def _lanes_between(builder, ty, first, last):  # type: ignore[no-untyped-def]
    """A lane mask of vector type ``ty``'s width: lanes ``first .. last-1`` set. Either
    bound may lie outside the lanes (a step in the middle of a long bucket)."""
    def clamp(x):  # type: ignore[no-untyped-def]
        x = builder.select(builder.icmp_signed("<", x, x.type(0)), x.type(0), x)
        return builder.select(builder.icmp_signed(">", x, x.type(ty.count)), x.type(ty.count), x)

    lanes = ir.Constant(ty, list(range(ty.count)))
    return builder.and_(builder.icmp_unsigned(">=", lanes, _vector(builder, ty, clamp(first))),
                        builder.icmp_unsigned("<", lanes, _vector(builder, ty, clamp(last))))


def _element_pointer(context, builder, aryty, ary, idx):  # type: ignore[no-untyped-def]
    array = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, array, [idx], wraparound=False)


def _declare(builder, name, ret, args):  # type: ignore[no-untyped-def]
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


def _masked_load(builder, vec, src, mask):  # type: ignore[no-untyped-def]
    """``llvm.masked.load`` of vector type ``vec`` from element pointer ``src``. LLVM 17
    and later have only opaque pointers (name suffix ``.p0``); before, the intrinsic
    takes a pointer to the vector type and says so in its name (numba 0.60: LLVM 14)."""
    i32 = ir.IntType(32)
    name = f"llvm.masked.load.v{vec.count}i{vec.element.width}"
    if _TYPED_POINTERS:
        src = builder.bitcast(src, vec.as_pointer())
        name += f".p0v{vec.count}i{vec.element.width}"
    else:
        name += ".p0"
    load = _declare(builder, name, vec, [src.type, i32, ir.VectorType(ir.IntType(1), vec.count), vec])
    return builder.call(load, [src, i32(vec.element.width // 8), mask, ir.Constant(vec, None)])


def _store(builder, value, dst):  # type: ignore[no-untyped-def]
    """A plain (unaligned) store of vector ``value`` at element pointer ``dst``."""
    store = builder.store(value, builder.bitcast(dst, value.type.as_pointer()))
    store.align = value.type.element.width // 8


def _llvm_major() -> int:
    from llvmlite import binding

    return int(binding.llvm_version_info[0])


_TYPED_POINTERS = _llvm_major() < 17
#: Whether _scan_words16 compresses in a register (``llvm.experimental.vector.compress``,
#: LLVM 19+) or, before, with LLVM's compress-store (which x86 lowers to the memory form).
_HAS_VECTOR_COMPRESS = _llvm_major() >= 19


@intrinsic
def _scan_words16(typingctx, words, p, first, last, ql, mask, rem, low, out, at):  # type: ignore[no-untyped-def]
    """Packed bucket scan, 16 words at once: of lanes ``first .. last-1`` of
    ``words[p : p + 16]``, store the row (``word >> low``) of each word whose low bits
    are within ``rem`` of ``ql`` at ``out[at:]``, packed together; return how many.
    Other lanes are not read (a masked load does not fault). Callers keep ``p`` at a
    multiple of 16 in a line-aligned table: a load that straddled two lines would
    fetch both, even for lanes it masks out. ``out[at : at + 16]`` is written whole
    (past the kept rows with junk the next step overwrites), so ``out`` keeps 16 spare
    slots: the rows are compressed in a register and stored with one plain store. A
    compress straight to memory (VPCOMPRESSD m512) is microcoded on AMD Zen 4 and made
    this kernel 1.4x slower there than the scalar loop; see docs/matching.md."""
    sig = types.int64(words, p, first, last, ql, mask, rem, low, out, at)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i1, i16, i32 = ir.IntType(1), ir.IntType(16), ir.IntType(32)
        vec, lanes = ir.VectorType(i32, 16), ir.VectorType(i1, 16)
        src = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        dst = _element_pointer(context, builder, signature.args[8], args[8], args[9])
        valid = _lanes_between(builder, vec, args[2], args[3])
        v = _masked_load(builder, vec, src, valid)
        diff = builder.and_(builder.xor(v, _vector(builder, vec, args[4])), _vector(builder, vec, args[5]))
        bits = builder.call(_declare(builder, "llvm.ctpop.v16i32", vec, [vec]), [diff])
        keep = builder.and_(builder.icmp_unsigned("<=", bits, _vector(builder, vec, args[6])), valid)
        rows = builder.lshr(v, _vector(builder, vec, args[7]))
        if _HAS_VECTOR_COMPRESS:
            compress = _declare(builder, "llvm.experimental.vector.compress.v16i32", vec, [vec, lanes, vec])
            _store(builder, builder.call(compress, [rows, keep, ir.Constant(vec, ir.Undefined)]), dst)
        else:
            store = _declare(builder, "llvm.masked.compressstore.v16i32", ir.VoidType(), [vec, dst.type, lanes])
            builder.call(store, [rows, dst, keep])
        kept = builder.call(_declare(builder, "llvm.ctpop.i16", i16, [i16]), [builder.bitcast(keep, i16)])
        return builder.zext(kept, ir.IntType(64))

    return sig, codegen


@intrinsic
def _fill16(typingctx, out, at, value):  # type: ignore[no-untyped-def]
    """``out[at : at + 16] = value`` in one store (``out`` keeps 16 spare slots at its end)."""
    sig = types.void(out, at, value)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        lane = context.get_value_type(signature.args[0].dtype)
        vec = ir.VectorType(lane, 16)
        dst = _element_pointer(context, builder, signature.args[0], args[0], args[1])
        _store(builder, _vector(builder, vec, args[2]), dst)
        return context.get_dummy_value()

    return sig, codegen


def _near_lanes(lanes: int, bits: int):  # type: ignore[no-untyped-def]
    """An intrinsic ``near(arr, p, first, last, q, max_dist)``: a bit mask of lanes
    ``first .. last-1`` of ``arr[p : p + lanes]`` (``bits``-bit items) within
    ``max_dist`` bits of ``q`` (0: none). ``p`` a multiple of ``lanes`` in a line-aligned
    table, as for _scan_words16."""

    @intrinsic
    def near(typingctx, arr, p, first, last, q, max_dist):  # type: ignore[no-untyped-def]
        sig = types.int64(arr, p, first, last, q, max_dist)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            vec = ir.VectorType(ir.IntType(bits), lanes)
            src = _element_pointer(context, builder, signature.args[0], args[0], args[1])
            valid = _lanes_between(builder, vec, args[2], args[3])
            v = _masked_load(builder, vec, src, valid)
            ctpop = _declare(builder, f"llvm.ctpop.v{lanes}i{bits}", vec, [vec])
            diff = builder.call(ctpop, [builder.xor(v, _vector(builder, vec, args[4]))])
            near = builder.and_(builder.icmp_unsigned("<=", diff, _vector(builder, vec, args[5])), valid)
            return builder.zext(builder.bitcast(near, ir.IntType(lanes)), ir.IntType(64))

        return sig, codegen

    return near


#: 8 inline codes (64-bit) or 16 fragments (32-bit) at a time: one 64-byte line.
_near8 = _near_lanes(8, 64)
_near16 = _near_lanes(16, 32)
