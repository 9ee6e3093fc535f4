using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using GptSharp.Randomness;
using GptSharp.Tensors;

namespace GptSharp.Layers;

internal static unsafe partial class Kernels
{
    /// <summary>
    /// The book's causal multi-head attention core, fused, given the projected queries, keys and values
    /// [batch, seq, channels] (head h owns columns h·headDim .. (h+1)·headDim − 1): per (batch, head), scores = q·kᵀ,
    /// future positions masked, weights = softmax(scores / √headDim), dropout applied with the bit mask
    /// <paramref name="dropoutBits"/> (see <see cref="DropoutMaskBits"/>; null for none), and context = weights·v
    /// written back into [batch, seq, channels] (<c>transpose(1, 2).view(b, seq, d_out)</c> for free).
    /// No [seq, seq] matrix is stored: a block of <see cref="CausalBlock"/> query rows scores all the keys it sees
    /// in a per-thread strip (32 × seq floats, in L2 at GPT-2's 1024), and only each row's softmax statistics
    /// (max and 1/sum, [batch, heads, seq, 2]) are written to <paramref name="rowStats"/> for the backward pass,
    /// which recomputes the weights from them (null: inference, nothing kept).
    /// </summary>
    /// <remarks>
    /// Each weight is computed by exactly the operations the unfused kernel used (one GEMM per block, then the
    /// row's scale, max, exp, sum and 1/sum over the whole visible row), so the strip needs no online rescaling and
    /// the results are the unfused kernel's bit for bit; 32 × seq floats fit L2 up to contexts far past GPT-2's.
    /// The work items are (batch, head, block of query rows): 192 at the book's shapes, so 16 or 32 threads all get work.
    /// The GEMMs inside run single-threaded.
    /// </remarks>
    public static void AttentionForward(float* context, float* rowStats, uint* dropoutBits, float dropoutScale,
        float* query, float* key, float* value, int batch, int seq, int channels, int heads)
        => AttentionForward(Gemm.BestPath, context, rowStats, dropoutBits, dropoutScale, query, key, value, batch, seq, channels, heads);

    /// <summary><see cref="AttentionForward(float*,float*,uint*,float,float*,float*,float*,int,int,int,int)"/> on a chosen vector width (tests).</summary>
    internal static void AttentionForward(Gemm.KernelPath path, float* context, float* rowStats, uint* dropoutBits, float dropoutScale,
        float* query, float* key, float* value, int batch, int seq, int channels, int heads)
    {
        int headDim = channels / heads;
        var items = new AttentionItems(batch * heads, seq, 0);
        RowParallel.For(items.Count, items.WorkPerItem(headDim), new AttentionForwardKernel
        {
            Items = items, Path = path, Context = context, RowStats = rowStats, DropoutBits = dropoutBits, DropoutScale = dropoutScale,
            Query = query, Key = key, Value = value, Seq = seq, Past = 0, KeyRows = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    /// <summary>
    /// Backward of <see cref="AttentionForward(float*,float*,uint*,float,float*,float*,float*,int,int,int,int)"/>:
    /// from dContext [batch, seq, channels] to dQuery, dKey, dValue (overwritten), recomputing the weights from the
    /// saved <paramref name="rowStats"/>. <paramref name="rowDots"/> [batch, heads, seq] is scratch.
    /// Softmax backward: dScore_ij = w_ij·(dW_ij − Σ_k w_ik·dW_ik), times the 1/√headDim scale.
    /// </summary>
    /// <remarks>
    /// Two phases, each over strips that live in per-thread scratch. Query blocks: the weights and dW = dContext·vᵀ of
    /// 32 query rows, the row sums Σ_k w_ik·dW_ik (kept in <paramref name="rowDots"/>) and dQuery = dScores·k. Key blocks:
    /// the weights and dScores of the 32 key columns of a block for every query row that sees them, then
    /// dValue = (dropped weights)ᵀ·dContext and dKey = dScoresᵀ·q, each one GEMM over those rows — so every sum runs in
    /// the order of the unfused kernel (which kept [seq, seq] matrices) and the gradients are its bits. Elements are
    /// computed the same way whatever the thread count.
    /// </remarks>
    public static void AttentionBackward(float* dQuery, float* dKey, float* dValue, float* rowDots, float* dContext,
        float* rowStats, uint* dropoutBits, float dropoutScale, float* query, float* key, float* value,
        int batch, int seq, int channels, int heads)
        => AttentionBackward(Gemm.BestPath, dQuery, dKey, dValue, rowDots, dContext, rowStats, dropoutBits, dropoutScale,
            query, key, value, batch, seq, channels, heads);

    /// <summary><see cref="AttentionBackward(float*,float*,float*,float*,float*,float*,uint*,float,float*,float*,float*,int,int,int,int)"/> on a chosen vector width (tests).</summary>
    internal static void AttentionBackward(Gemm.KernelPath path, float* dQuery, float* dKey, float* dValue, float* rowDots, float* dContext,
        float* rowStats, uint* dropoutBits, float dropoutScale, float* query, float* key, float* value,
        int batch, int seq, int channels, int heads)
    {
        int headDim = channels / heads;
        var items = new AttentionItems(batch * heads, seq, 0);
        var kernel = new AttentionBackwardKernel
        {
            Items = items, Path = path, DQuery = dQuery, DKey = dKey, DValue = dValue, RowDots = rowDots, DContext = dContext,
            RowStats = rowStats, DropoutBits = dropoutBits, DropoutScale = dropoutScale,
            Query = query, Key = key, Value = value,
            Seq = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        };
        long work = items.WorkPerItem(headDim);
        kernel.KeyPhase = false;
        RowParallel.For(items.Count, 3 * work / 2, kernel);
        kernel.KeyPhase = true;
        RowParallel.For(items.Count, 2 * work, kernel);
    }

    /// <summary>
    /// The work items of causal attention: (batch·head, block of <see cref="CausalBlock"/> query — or key — rows),
    /// ranked so that the first items are the most expensive (the pool hands them out first, the cheap ones fill the gaps).
    /// </summary>
    internal readonly struct AttentionItems(int batchHeads, int seq, int past)
    {
        public readonly int BatchHeads = batchHeads;
        public readonly int Seq = seq;
        public readonly int Past = past;
        public readonly int Blocks = (seq + CausalBlock - 1) / CausalBlock;
        public int Count => BatchHeads * Blocks;

        /// <summary>Item → (batch·head, rank): rank 0 for the first <see cref="BatchHeads"/> items, 1 for the next, ...</summary>
        public (int BatchHead, int Rank) this[int item] => (item % BatchHeads, item / BatchHeads);

        /// <summary>The block of rank <paramref name="rank"/> when the cost grows with the block index (query blocks: causal rows see more keys).</summary>
        public int LastFirst(int rank) => Blocks - 1 - rank;

        /// <summary>Mean multiply-adds of one item's two GEMMs (a block of rows against the keys it sees, on average).</summary>
        public long WorkPerItem(int headDim) => 2L * Math.Min(CausalBlock, Seq) * (Past + Seq / 2 + CausalBlock) * headDim;
    }

    /// <summary>
    /// Attention of <paramref name="newTokens"/> new queries per row against a key/value cache, for generation
    /// (a long prompt's prefill as well as one-token steps). <paramref name="keyCache"/>/<paramref name="valueCache"/>
    /// are [batch, cacheCapacity, channels] and already hold positions 0 .. past + newTokens − 1 (the new tokens' keys
    /// and values included); query i (position past + i) attends to positions 0 .. past + i. No dropout (inference).
    /// The same fused kernel as training: no [newTokens, past + newTokens] scores are stored.
    /// Writes context [batch, newTokens, channels].
    /// </summary>
    public static void AttentionForwardCached(float* context, float* query, float* keyCache, float* valueCache,
        int batch, int newTokens, int past, int cacheCapacity, int channels, int heads)
    {
        int headDim = channels / heads;
        var items = new AttentionItems(batch * heads, newTokens, past);
        RowParallel.For(items.Count, items.WorkPerItem(headDim), new AttentionForwardKernel
        {
            Items = items, Path = Gemm.BestPath, Context = context, Query = query, Key = keyCache, Value = valueCache,
            Seq = newTokens, Past = past, KeyRows = cacheCapacity, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    /// <summary>Query rows per causal block: the GEMMs skip the masked triangle at this granularity. A multiple of 32
    /// (a block of key columns is whole words of the dropout bit mask).</summary>
    private const int CausalBlock = 32;

    /// <summary>Words per row of a dropout bit mask over <paramref name="columns"/> columns (rows start on a word).</summary>
    public static int DropoutBitWords(int columns) => (columns + 31) / 32;

    /// <summary>The kept elements' factor of inverted dropout, 1/(1 − p) as PyTorch's <c>noise.div_(1 - p)</c> computes it in float32.</summary>
    public static float DropoutScale(double dropRate) => 1f / (float)(1 - dropRate);

    /// <summary>
    /// Draws a dropout mask over <paramref name="rows"/> × <paramref name="columns"/> elements as bits (1: kept), from
    /// the same random numbers, in the same order, as <see cref="DropoutMask"/> over the whole tensor in one go (PyTorch's
    /// <c>bernoulli_</c> on the [batch, heads, seq, seq] weights): row r's bits are words
    /// r·<see cref="DropoutBitWords"/> onwards, bit j of word w for column 32w + j. 1/32 of the float mask's memory.
    /// </summary>
    public static void DropoutMaskBits(uint* bits, int rows, int columns, double dropRate, IRandomGenerator generator)
    {
        if (!(dropRate > 0 && dropRate < 1))
            throw new ArgumentOutOfRangeException(nameof(dropRate), $"A dropout mask needs 0 < p < 1, got {dropRate}.");
        double keep = 1 - dropRate;
        int words = DropoutBitWords(columns);
        float* draws = ThreadScratch.Grow(ref t_drawScratch, ref t_drawCapacity, columns);
        var span = new Span<float>(draws, columns);
        for (int r = 0; r < rows; r++)
        {
            generator.Bernoulli(span, keep);
            uint* row = bits + (long)r * words;
            for (int w = 0; w < words; w++)
            {
                uint word = 0;
                int first = 32 * w, count = Math.Min(32, columns - first);
                for (int j = 0; j < count; j++)
                    if (draws[first + j] != 0) word |= 1u << j;
                row[w] = word;
            }
        }
    }

    [ThreadStatic] private static nint t_drawScratch;
    [ThreadStatic] private static long t_drawCapacity;
    [ThreadStatic] private static nint t_attentionScratch;
    [ThreadStatic] private static long t_attentionCapacity;

    /// <summary>
    /// row[j] *= (bit j of <paramref name="bits"/> set ? <paramref name="scale"/> : 0) for j &lt; <paramref name="length"/>:
    /// the product by the float mask <see cref="DropoutMask"/> would hold, bit for bit. Vector512 expands 16 bits at a
    /// time, Vector256 8 (both run on any CPU, in software where the width is not native, so tests check both).
    /// </summary>
    internal static void ApplyDropoutBits(Gemm.KernelPath path, float* row, uint* bits, int length, float scale)
    {
        int j = 0;
        if (path == Gemm.KernelPath.Vector512)
        {
            var lanes = Vector512.Create(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768);
            var factor = Vector512.Create(scale);
            for (; j + 16 <= length; j += 16)
            {
                var selected = Vector512.Create((int)(bits[j >> 5] >> (j & 31)) & 0xFFFF) & lanes;
                var kept = Vector512.Equals(selected, lanes).AsSingle();
                Vector512.Store(Vector512.Load(row + j) * (kept & factor), row + j);
            }
        }
        else if (path == Gemm.KernelPath.Vector256)
        {
            var lanes = Vector256.Create(1, 2, 4, 8, 16, 32, 64, 128);
            var factor = Vector256.Create(scale);
            for (; j + 8 <= length; j += 8)
            {
                var selected = Vector256.Create((int)(bits[j >> 5] >> (j & 31)) & 0xFF) & lanes;
                var kept = Vector256.Equals(selected, lanes).AsSingle();
                Vector256.Store(Vector256.Load(row + j) * (kept & factor), row + j);
            }
        }
        for (; j < length; j++)
            row[j] *= ((bits[j >> 5] >> (j & 31)) & 1) != 0 ? scale : 0f;
    }

    private static float* AttentionScratch(long floats) => ThreadScratch.Grow(ref t_attentionScratch, ref t_attentionCapacity, floats);

    /// <summary>Softmax of one causal row in place, the statistics returned: the unfused kernel's exact operations.</summary>
    private static (float Max, float Inverse) SoftmaxRow(float* row, int length, float invSqrt)
    {
        var span = new Span<float>(row, length);
        TensorPrimitives.Multiply(span, invSqrt, span);
        float max = TensorPrimitives.Max(span);
        TensorPrimitives.Subtract(span, max, span);
        TensorPrimitives.Exp(span, span);
        float inverse = 1f / TensorPrimitives.Sum(span);
        TensorPrimitives.Multiply(span, inverse, span);
        return (max, inverse);
    }

    /// <summary>The weights of a row from its scores and saved statistics: the same operations as <see cref="SoftmaxRow"/>.</summary>
    private static void RecomputeWeights(float* row, int length, float invSqrt, float max, float inverse)
    {
        var span = new Span<float>(row, length);
        TensorPrimitives.Multiply(span, invSqrt, span);
        TensorPrimitives.Subtract(span, max, span);
        TensorPrimitives.Exp(span, span);
        TensorPrimitives.Multiply(span, inverse, span);
    }

    /// <summary>d(scores) of a row from d(dropped weights) in place: back through the dropout, the softmax and the scale.</summary>
    private static void ScoreGradientRow(float* dRow, float* wRow, int length, float dot, float invSqrt)
    {
        var d = new Span<float>(dRow, length);
        var w = new ReadOnlySpan<float>(wRow, length);
        TensorPrimitives.Subtract(d, dot, d);
        TensorPrimitives.Multiply(d, w, d);
        TensorPrimitives.Multiply(d, invSqrt, d);
    }

    private struct AttentionForwardKernel : IRangeKernel
    {
        public AttentionItems Items;
        public Gemm.KernelPath Path;
        public float* Context, RowStats, Query, Key, Value;
        public uint* DropoutBits;
        public float DropoutScale;
        public int Seq, Past, KeyRows, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int n = Seq, c = Channels, hd = HeadDim, words = DropoutBitWords(n);
            float invSqrt = 1f / MathF.Sqrt(hd);
            float* s = AttentionScratch((long)CausalBlock * (Past + n));
            for (int item = start; item < end; item++)
            {
                var (bh, rank) = Items[item];
                int b = bh / Heads, h = bh % Heads;
                int i0 = Items.LastFirst(rank) * CausalBlock, rows = Math.Min(CausalBlock, n - i0), visible = Past + i0 + rows;
                float* k = Key + (long)b * KeyRows * c + (long)h * hd, v = Value + (long)b * KeyRows * c + (long)h * hd;
                long queryOffset = (long)b * n * c + (long)h * hd + (long)i0 * c;
                // scores = q·kᵀ for query rows [i0, i1): they only need keys up to position Past + i1 − 1 (the rest is
                // masked), which skips almost half of the work.
                Gemm.MatMul(Path, false, true, rows, visible, hd, Query + queryOffset, c, k, c, s, visible, false, null, false);
                for (int r = 0; r < rows; r++)
                {
                    // Row i sees keys 0..Past + i; the rest is masked to −inf, i.e. weight 0 after softmax.
                    int i = i0 + r, length = Past + i + 1;
                    float* row = s + (long)r * visible;
                    var (max, inverse) = SoftmaxRow(row, length, invSqrt);
                    new Span<float>(row + length, visible - length).Clear();
                    if (RowStats != null)
                    {
                        float* stats = RowStats + 2 * ((long)bh * n + i);
                        stats[0] = max;
                        stats[1] = inverse;
                    }
                    if (DropoutBits != null) ApplyDropoutBits(Path, row, DropoutBits + ((long)bh * n + i) * words, length, DropoutScale);
                }
                // context = weights·v: rows [i0, i1) have zero weight beyond their last visible key.
                Gemm.MatMul(Path, false, false, rows, hd, visible, s, visible, v, c, Context + queryOffset, c, false, null, false);
            }
        }
    }

    private struct AttentionBackwardKernel : IRangeKernel
    {
        public AttentionItems Items;
        public Gemm.KernelPath Path;
        public bool KeyPhase;
        public float* DQuery, DKey, DValue, RowDots, DContext, RowStats, Query, Key, Value;
        public uint* DropoutBits;
        public float DropoutScale;
        public int Seq, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            float* scratch = AttentionScratch(3L * CausalBlock * Seq);
            for (int item = start; item < end; item++)
            {
                if (KeyPhase) KeyBlock(item, scratch);
                else QueryBlock(item, scratch);
            }
        }

        /// <summary>Query rows [i0, i1): dW = dContext·vᵀ, the row sums Σ w·dW, dScores, dQuery = dScores·k.</summary>
        private readonly void QueryBlock(int item, float* scratch)
        {
            int t = Seq, c = Channels, hd = HeadDim, words = DropoutBitWords(t);
            float invSqrt = 1f / MathF.Sqrt(hd);
            var (bh, rank) = Items[item];
            int b = bh / Heads, h = bh % Heads;
            int i0 = Items.LastFirst(rank) * CausalBlock, rows = Math.Min(CausalBlock, t - i0), visible = i0 + rows;
            long headOffset = (long)b * t * c + (long)h * hd, blockOffset = headOffset + (long)i0 * c;
            float* w = scratch, dw = scratch + (long)CausalBlock * t;
            Gemm.MatMul(Path, false, true, rows, visible, hd, Query + blockOffset, c, Key + headOffset, c, w, visible, false, null, false);
            Gemm.MatMul(Path, false, true, rows, visible, hd, DContext + blockOffset, c, Value + headOffset, c, dw, visible, false, null, false);
            for (int r = 0; r < rows; r++)
            {
                int i = i0 + r, length = i + 1;
                float* stats = RowStats + 2 * ((long)bh * t + i);
                float* wRow = w + (long)r * visible, dRow = dw + (long)r * visible;
                RecomputeWeights(wRow, length, invSqrt, stats[0], stats[1]);
                // With dropout, v was multiplied by the dropped weights: d(weights) = d(dropped)·mask.
                if (DropoutBits != null) ApplyDropoutBits(Path, dRow, DropoutBits + ((long)bh * t + i) * words, length, DropoutScale);
                float dot = TensorPrimitives.Dot(new ReadOnlySpan<float>(wRow, length), new ReadOnlySpan<float>(dRow, length));
                RowDots[(long)bh * t + i] = dot;
                ScoreGradientRow(dRow, wRow, length, dot, invSqrt);
                new Span<float>(dRow + length, visible - length).Clear();
            }
            Gemm.MatMul(Path, false, false, rows, hd, visible, dw, visible, Key + headOffset, c, DQuery + blockOffset, c, false, null, false);
        }

        /// <summary>
        /// Key columns [j0, j1), against the query rows i ≥ j0 that see them: dValue = (dropped weights)ᵀ·dContext and
        /// dKey = dScoresᵀ·q. The first key blocks sum over the most rows: they come first.
        /// </summary>
        private readonly void KeyBlock(int item, float* scratch)
        {
            int t = Seq, c = Channels, hd = HeadDim, words = DropoutBitWords(t);
            float invSqrt = 1f / MathF.Sqrt(hd);
            var (bh, rank) = Items[item];
            int b = bh / Heads, h = bh % Heads;
            int j0 = rank * CausalBlock, cols = Math.Min(CausalBlock, t - j0), m = t - j0;
            long headOffset = (long)b * t * c + (long)h * hd, blockOffset = headOffset + (long)j0 * c;
            // Strips of m rows × 32 columns: the weights, the dropped weights, d(scores).
            float* w = scratch, dropped = scratch + (long)CausalBlock * t, dw = dropped + (long)CausalBlock * t;
            Gemm.MatMul(Path, false, true, m, cols, hd, Query + blockOffset, c, Key + blockOffset, c, w, CausalBlock, false, null, false);
            Gemm.MatMul(Path, false, true, m, cols, hd, DContext + blockOffset, c, Value + blockOffset, c, dw, CausalBlock, false, null, false);
            for (int r = 0; r < m; r++)
            {
                int i = j0 + r, valid = Math.Min(cols, r + 1);
                float* stats = RowStats + 2 * ((long)bh * t + i);
                float* wRow = w + (long)r * CausalBlock, dRow = dw + (long)r * CausalBlock;
                // exp is computed over the span the forward pass used for the first rows (a short span may take a
                // narrower vector or scalar path), over the whole 32-wide row otherwise (lanes past the block are
                // scratch and cleared below): both give the forward pass's bits.
                RecomputeWeights(wRow, j0 == 0 && i < cols ? i + 1 : CausalBlock, invSqrt, stats[0], stats[1]);
                new Span<float>(wRow + valid, CausalBlock - valid).Clear();
                uint* rowBits = DropoutBits != null ? DropoutBits + ((long)bh * t + i) * words + j0 / 32 : null;
                if (rowBits != null)
                {
                    float* dRowDropped = dropped + (long)r * CausalBlock;
                    Buffer.MemoryCopy(wRow, dRowDropped, CausalBlock * sizeof(float), CausalBlock * sizeof(float));
                    ApplyDropoutBits(Path, dRowDropped, rowBits, valid, DropoutScale);
                    ApplyDropoutBits(Path, dRow, rowBits, valid, DropoutScale);
                }
                ScoreGradientRow(dRow, wRow, valid, RowDots[(long)bh * t + i], invSqrt);
                new Span<float>(dRow + valid, CausalBlock - valid).Clear();
            }
            Gemm.MatMul(Path, true, false, cols, hd, m, DropoutBits != null ? dropped : w, CausalBlock, DContext + blockOffset, c,
                DValue + blockOffset, c, false, null, false);
            Gemm.MatMul(Path, true, false, cols, hd, m, dw, CausalBlock, Query + blockOffset, c, DKey + blockOffset, c, false, null, false);
        }
    }
}
