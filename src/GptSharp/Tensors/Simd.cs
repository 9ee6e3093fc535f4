using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using KernelPath = GptSharp.Tensors.Gemm.KernelPath;

namespace GptSharp.Tensors;

/// <summary>
/// The body of an element-wise kernel at element <c>i</c>, once per width (dotnet/runtime's <c>TensorPrimitives</c>
/// operator structs): the op holds its pointers and scalars, loads its input streams and stores its outputs; the
/// driver (<see cref="Simd.Map{TOp}"/>) chooses the width, runs the vector loop and the scalar tail. As a struct
/// type argument, every call is specialized and inlined: no interface dispatch in the loop.
/// </summary>
internal interface IMapOp
{
    /// <summary>Element <paramref name="i"/> (the scalar path and the tail).</summary>
    void Invoke(long i);

    /// <summary>Elements [<paramref name="i"/>, +<see cref="Vector256{T}.Count"/>).</summary>
    void Invoke256(long i);

    /// <summary>Elements [<paramref name="i"/>, +<see cref="Vector512{T}.Count"/>).</summary>
    void Invoke512(long i);
}

/// <summary>
/// One term of a sum at element <c>i</c>, folded into an accumulator (a dot product: <c>fma(x[i], y[i], acc)</c>); the
/// driver (<see cref="Simd.Reduce{TOp}"/>) keeps the accumulators, in registers, and adds them up.
/// </summary>
internal interface IReduceOp
{
    float Invoke(float accumulator, long i);
    Vector256<float> Invoke(Vector256<float> accumulator, long i);
    Vector512<float> Invoke(Vector512<float> accumulator, long i);
}

/// <summary>A predicate for <see cref="Simd.FindFirst{TOp}"/>: on one element, and on a block of vectors from element <c>i</c>.</summary>
internal interface ISearchOp
{
    bool Matches(long i);

    /// <summary>Whether any element of the block of 256-bit vectors at <paramref name="i"/> matches.</summary>
    bool Any256(long i);

    /// <summary>Whether any element of the block of 512-bit vectors at <paramref name="i"/> matches.</summary>
    bool Any512(long i);
}

/// <summary>
/// The one vector driver of the element-wise kernels (GELU, dropout and the residual sum, AdamW,
/// int8 row dequantization, the skinny GEMM's dot product, the token file's id check): the loop over a width the CPU has, then the scalar tail.
/// The GEMM register tiles are different kernels by design and stay hand-written (<see cref="Gemm"/>).
/// Tests pass each <see cref="KernelPath"/> to run both widths on a machine with AVX-512.
/// </summary>
internal static unsafe class Simd
{
    /// <summary>Runs <paramref name="op"/> over elements [<paramref name="start"/>, <paramref name="end"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Map<TOp>(KernelPath path, long start, long end, TOp op) where TOp : struct, IMapOp
    {
        long i = start;
        if (path == KernelPath.Vector512)
            for (; i <= end - Vector512<float>.Count; i += Vector512<float>.Count) op.Invoke512(i);
        else if (path == KernelPath.Vector256)
            for (; i <= end - Vector256<float>.Count; i += Vector256<float>.Count) op.Invoke256(i);
        for (; i < end; i++) op.Invoke(i);
    }

    /// <summary>
    /// The sum of <paramref name="op"/>'s terms over elements [0, <paramref name="length"/>): two vector accumulators
    /// (two independent chains of adds), one vector at a time for what is left, their lane sum, then the scalar tail
    /// added in order.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Reduce<TOp>(KernelPath path, long length, TOp op) where TOp : struct, IReduceOp
    {
        long i = 0;
        float sum = 0f;
        if (path == KernelPath.Vector512)
        {
            const int w = 16;
            Vector512<float> s0 = default, s1 = default;
            for (; i + 2 * w <= length; i += 2 * w)
            {
                s0 = op.Invoke(s0, i);
                s1 = op.Invoke(s1, i + w);
            }
            for (; i + w <= length; i += w) s0 = op.Invoke(s0, i);
            sum = Vector512.Sum(s0 + s1);
        }
        else if (path == KernelPath.Vector256)
        {
            const int w = 8;
            Vector256<float> s0 = default, s1 = default;
            for (; i + 2 * w <= length; i += 2 * w)
            {
                s0 = op.Invoke(s0, i);
                s1 = op.Invoke(s1, i + w);
            }
            for (; i + w <= length; i += w) s0 = op.Invoke(s0, i);
            sum = Vector256.Sum(s0 + s1);
        }
        for (; i < length; i++) sum = op.Invoke(sum, i);
        return sum;
    }

    /// <summary>
    /// The first element in [0, <paramref name="length"/>) that <paramref name="op"/> matches, or -1: blocks of
    /// <paramref name="block256"/> or <paramref name="block512"/> elements are skipped while the op says none of theirs
    /// matches (a memory-bound scan does as little as possible per byte), then the scalar test finds the exact index in
    /// the block flagged (or the tail).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long FindFirst<TOp>(KernelPath path, long length, int block256, int block512, TOp op) where TOp : struct, ISearchOp
    {
        long i = 0;
        if (path == KernelPath.Vector512)
            for (; i <= length - block512 && !op.Any512(i); i += block512) { }
        if (path != KernelPath.Scalar)
            for (; i <= length - block256 && !op.Any256(i); i += block256) { }
        for (; i < length; i++)
            if (op.Matches(i)) return i;
        return -1;
    }

    /// <summary>Elements split into chunks of this size for <see cref="RowParallel"/>.</summary>
    internal const int ElementChunk = 4096;

    internal static int Chunks(long n) => checked((int)((n + ElementChunk - 1) / ElementChunk));

    /// <summary><paramref name="op"/> over <paramref name="n"/> elements, split across <see cref="Workers"/> in chunks.</summary>
    public static void ParallelMap<TOp>(KernelPath path, long n, long workPerElement, TOp op) where TOp : struct, IMapOp =>
        RowParallel.For(Chunks(n), ElementChunk * workPerElement, new ChunkedMap<TOp> { Path = path, Length = n, Op = op });

    /// <summary>Chunks [start, end) of an element-wise op: the one range kernel of every such kernel.</summary>
    private struct ChunkedMap<TOp> : IRangeKernel where TOp : struct, IMapOp
    {
        public KernelPath Path;
        public long Length;
        public TOp Op;

        public readonly void Execute(int start, int end) =>
            Map(Path, (long)start * ElementChunk, Math.Min((long)end * ElementChunk, Length), Op);
    }
}
