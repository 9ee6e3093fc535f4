using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using GptSharp.Tensors;

namespace GptSharp.Layers;

/// <summary>
/// The forward pass of the fused causal attention over whole query tiles (training, evaluation and a long prompt's
/// prefill), with the scores of a (query tile, key tile) pair held transposed: st[j·32 + i] is key j's score for
/// query i. Eight queries then share a vector and the online softmax runs down the 32 keys with no horizontal step:
/// each lane keeps its own max and sum, the tile's max is 32 vector max operations, the exps are independent of one
/// another (row by row, each row's max → exp → sum was a chain of dependent steps, and the softmax took about a third of the
/// forward pass). The scores are kᵀ-free: S = K·Qᵀ reads the keys in place and the queries transposed per head.
/// </summary>
internal static unsafe partial class Kernels
{
    /// <summary>Key tiles of a query block, key tile by key tile, with the softmax over transposed scores (see above).</summary>
    private struct TransposedForwardKernel : IRangeKernel
    {
        public QueryBlocks Items;
        public Gemm.KernelPath Path;
        public float* Context, RowStats, QueriesT;
        public HeadRows Key, Value;
        public uint* DropoutBits;
        public float DropoutScale;
        public int QueriesTStride, Seq, Past, Channels, Heads, HeadDim;

        /// <summary>
        /// Item (head, block of query tiles): key tile by key tile, each query tile of the block that sees it gets its
        /// scores, online softmax and o += weights·v (every row meets the key tiles in ascending order, whatever the
        /// blocks), then the rows are divided by their sums.
        /// </summary>
        public readonly void Execute(int start, int end)
        {
            int n = Seq, c = Channels, hd = HeadDim, tile = CausalBlock;
            int blockRows = Items.TilesPerBlock * tile;
            float* o = TileScratch((long)blockRows * hd + tile * tile + 3 * blockRows), p = o + (long)blockRows * hd;
            float* max = p + tile * tile, sum = max + blockRows, factors = sum + blockRows;
            for (int item = start; item < end; item++)
            {
                var (bh, block) = Items[item];
                int b = bh / Heads, h = bh % Heads;
                int first = block * blockRows, rows = Math.Min(blockRows, n - first), visible = Past + first + rows;
                new Span<float>(o, rows * hd).Clear();
                new Span<float>(max, blockRows).Fill(float.NegativeInfinity);
                new Span<float>(sum, blockRows).Clear();
                for (int j0 = 0; j0 < visible; j0 += tile)
                    for (int s0 = 0; s0 < rows; s0 += tile)
                    {
                        int i0 = first + s0, tileRows = Math.Min(tile, rows - s0), tileVisible = Past + i0 + tileRows;
                        if (j0 >= tileVisible) continue;
                        QueryTile(b, h, bh, i0, j0, tileRows, Math.Min(tile, tileVisible - j0), p,
                            o + (long)s0 * hd, max + s0, sum + s0, factors + s0);
                    }
                float* ctx = Context + (long)b * n * c + (long)h * hd + (long)first * c;
                for (int r = 0; r < rows; r++)
                {
                    float inverse = 1f / sum[r];
                    TensorPrimitives.Multiply(new ReadOnlySpan<float>(o + (long)r * hd, hd), inverse, new Span<float>(ctx + (long)r * c, hd));
                    if (RowStats != null)
                    {
                        float* stats = RowStats + 2 * ((long)bh * n + first + r);
                        stats[0] = max[r];
                        stats[1] = inverse;
                    }
                }
            }
        }

        /// <summary>
        /// Queries i0 .. i0 + rows against the cols keys from j0: scores transposed (S = K·Qᵀ), the online softmax over
        /// them, the rows of o whose max grew rescaled, then o += weights·v (A is the transposed tile read by column).
        /// </summary>
        private readonly void QueryTile(int b, int h, int bh, int i0, int j0, int rows, int cols, float* p, float* o,
            float* max, float* sum, float* factors)
        {
            int hd = HeadDim, tile = CausalBlock;
            TileProduct(Path, Key.At(b, h, j0), Key.Row, 1, QueriesT + (long)bh * hd * QueriesTStride + i0, QueriesTStride,
                p, tile, cols, tile, hd, false);
            uint* bits = DropoutBits != null ? DropoutBits + ((long)bh * Seq + i0) * DropoutBitWords(Seq) + j0 / tile : null;
            OnlineSoftmaxTile(Path, p, rows, cols, j0 - Past - i0, 1f / MathF.Sqrt(hd), max, sum, factors,
                bits, DropoutBitWords(Seq), DropoutScale);
            for (int r = 0; r < rows; r++)
                if (factors[r] != 1f)
                {
                    var row = new Span<float>(o + (long)r * hd, hd);
                    TensorPrimitives.Multiply(row, factors[r], row);
                }
            TileProduct(Path, p, 1, tile, Value.At(b, h, j0), Value.Row, o, hd, rows, hd, cols, true);
        }
    }

    /// <summary>
    /// The online softmax of one (query tile, key tile) pair over transposed scores: st[j·32 + i] (j &lt; cols,
    /// i &lt; rows) becomes exp(s/√d − max_i) times query i's dropout factor for key j, where key j is visible to query i
    /// iff j + <paramref name="offset"/> ≤ i (offset = first key − first query position); masked pairs get 0.
    /// Query i's running <paramref name="max"/> and <paramref name="sum"/> (of the undropped weights) are updated, and
    /// <paramref name="factors"/>[i] receives exp(old max − new max) (1 when the max held), by which the caller rescales
    /// the row's output accumulator. <paramref name="bits"/> points at query 0's dropout word for this key tile (one
    /// query's words <paramref name="words"/> apart; null: no dropout).
    /// </summary>
    internal static void OnlineSoftmaxTile(Gemm.KernelPath path, float* st, int rows, int cols, int offset, float invSqrt,
        float* max, float* sum, float* factors, uint* bits, int words, float dropScale)
    {
        const int tile = CausalBlock;
        if (path == Gemm.KernelPath.Scalar)
        {
            for (int i = 0; i < rows; i++)
            {
                float tileMax = float.NegativeInfinity;
                for (int j = 0; j < cols && j + offset <= i; j++) tileMax = MathF.Max(tileMax, st[j * tile + i] * invSqrt);
                float old = max[i], m = MathF.Max(old, tileMax);
                float factor = old == m || old == float.NegativeInfinity ? 1f : MathF.Exp(old - m);
                uint word = bits != null ? bits[(long)i * words] : ~0u;
                float tileSum = 0;
                for (int j = 0; j < cols; j++)
                {
                    float e = j + offset <= i ? MathF.Exp(st[j * tile + i] * invSqrt - m) : 0f;
                    tileSum += e;
                    st[j * tile + i] = bits != null ? e * (((word >> j) & 1) != 0 ? dropScale : 0f) : e;
                }
                max[i] = m;
                sum[i] = sum[i] * factor + tileSum;
                factors[i] = factor;
            }
            return;
        }
        var scale = Vector256.Create(invSqrt);
        var minusInfinity = Vector256.Create(float.NegativeInfinity);
        var words8 = stackalloc int[8];
        for (int g = 0; g < rows; g += 8)
        {
            float* column = st + g;
            var lane = LaneIndex + Vector256.Create(g - offset);
            // Key j is visible to the lanes with i − offset ≥ j: all of them for j ≤ the group's first i − offset.
            int allVisible = Math.Min(cols, Math.Max(0, g - offset + 1));
            // Three short passes rather than one: a loop holding the exp's constants, the sums and the dropout's
            // vectors at once runs out of the 16 AVX2 registers and spills the exp's polynomial to the stack.
            var tileMax = minusInfinity;
            int j = 0;
            for (; j < allVisible; j++) tileMax = Vector256.MaxNative(tileMax, Vector256.Load(column + j * tile) * scale);
            for (; j < cols; j++)
            {
                var visible = Vector256.GreaterThanOrEqual(lane, Vector256.Create(j)).AsSingle();
                tileMax = Vector256.MaxNative(tileMax, Vector256.ConditionalSelect(visible, Vector256.Load(column + j * tile) * scale, minusInfinity));
            }
            var old = Vector256.Load(max + g);
            var m = Vector256.MaxNative(old, tileMax);
            for (j = 0; j < cols; j++)
            {
                float* at = column + j * tile;
                FastExp(Vector256.Load(at) * scale - m).Store(at);
            }
            var held = Vector256.Equals(old, m) | Vector256.Equals(old, minusInfinity);
            var factor = Vector256.ConditionalSelect(held, Vector256<float>.One, FastExp(old - m));
            Vector256<float> sum0 = Vector256<float>.Zero, sum1 = Vector256<float>.Zero;
            for (j = allVisible; j < cols; j++)
            {
                float* at = column + j * tile;
                (Vector256.Load(at) & Vector256.GreaterThanOrEqual(lane, Vector256.Create(j)).AsSingle()).Store(at);
            }
            if (bits == null)
                for (j = 0; j + 1 < cols; j += 2)
                {
                    sum0 += Vector256.Load(column + j * tile);
                    sum1 += Vector256.Load(column + (j + 1) * tile);
                }
            else
            {
                int count = Math.Min(8, rows - g);
                for (int l = 0; l < 8; l++) words8[l] = l < count ? (int)bits[(long)(g + l) * words] : 0;
                var keep = Vector256.Load(words8);
                var drop = Vector256.Create(dropScale);
                for (j = 0; j + 1 < cols; j += 2)
                {
                    float* at = column + j * tile;
                    var e0 = Vector256.Load(at);
                    var e1 = Vector256.Load(at + tile);
                    sum0 += e0;
                    sum1 += e1;
                    var bit = Vector256.ShiftRightLogical(keep, j);
                    (e0 * (Vector256.Equals(bit & Vector256<int>.One, Vector256<int>.One).AsSingle() & drop)).Store(at);
                    (e1 * (Vector256.Equals(bit & Vector256.Create(2), Vector256.Create(2)).AsSingle() & drop)).Store(at + tile);
                }
                if (j < cols)
                {
                    float* at = column + j * tile;
                    var e = Vector256.Load(at);
                    sum0 += e;
                    (e * (Vector256.Equals(Vector256.ShiftRightLogical(keep, j) & Vector256<int>.One, Vector256<int>.One).AsSingle() & drop)).Store(at);
                    j++;
                }
            }
            if (j < cols) sum0 += Vector256.Load(column + j * tile);
            m.Store(max + g);
            (Vector256.Load(sum + g) * factor + (sum0 + sum1)).Store(sum + g);
            factor.Store(factors + g);
        }
    }
}
