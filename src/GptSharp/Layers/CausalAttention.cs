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
    /// FlashAttention's way: a tile of <see cref="CausalBlock"/> query rows meets the key tiles it sees one at a time
    /// with an online softmax (running max and sum, the output accumulator rescaled when the max grows), so no
    /// [seq, seq] matrix exists; only each row's softmax max and 1/sum ([batch, heads, seq, 2]) are written to
    /// <paramref name="rowStats"/> for the backward pass (null: inference, nothing kept).
    /// </summary>
    /// <remarks>
    /// The keys are first transposed per head (headDim × seq, the caller thread's scratch) so that every tile product
    /// is one register-tiled micro-kernel (<see cref="TileProduct"/>) reading contiguous vectors. The work items are
    /// (batch, head, query tile), last tile first: 192 at the book's shapes, so 16 or 32 threads all get work. Each
    /// element is computed by the same operations in the same order whatever the thread count.
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
        var pack = new TransposeKernel { Source = key, Rows = seq, SourceRows = seq, Channels = channels, Heads = heads, HeadDim = headDim };
        float* keysT = TransposedScratch(batch * heads, headDim, seq, 1);
        pack.Run(keysT, batch * heads);
        RowParallel.For(items.Count, items.WorkPerItem(headDim), new AttentionForwardKernel
        {
            Items = items, Path = path, Context = context, RowStats = rowStats, DropoutBits = dropoutBits, DropoutScale = dropoutScale,
            Query = query, KeysT = keysT, KeysTStride = pack.Stride, Key = key, Value = value,
            Seq = seq, Past = 0, KeyRows = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    /// <summary>
    /// Backward of <see cref="AttentionForward(float*,float*,uint*,float,float*,float*,float*,int,int,int,int)"/>:
    /// from dContext [batch, seq, channels] to dQuery, dKey, dValue (overwritten), recomputing the weights tile by tile
    /// from the saved <paramref name="rowStats"/>. <paramref name="context"/> is the forward pass's output;
    /// <paramref name="rowDots"/> [batch, heads, seq] is scratch for D_i = Σ_d dContext_id·context_id
    /// (= Σ_j w_ij·dW_ij, the softmax backward's row sum, dropout included).
    /// Softmax backward: dScore_ij = w_ij·(dW_ij − D_i), times the 1/√headDim scale.
    /// </summary>
    /// <remarks>
    /// One parallel pass over two kinds of items, so no two items write the same element: key tiles (dValue = Σ over
    /// the query tiles that see them of (dropped weights)ᵀ·dContext, dKey = dScoresᵀ·q) and query tiles
    /// (dQuery = Σ over the key tiles they see of dScores·k). Both recompute scores and dW = dContext·vᵀ per tile pair;
    /// keys and values are transposed per head first, as in the forward pass.
    /// </remarks>
    public static void AttentionBackward(float* dQuery, float* dKey, float* dValue, float* rowDots, float* dContext,
        float* rowStats, uint* dropoutBits, float dropoutScale, float* query, float* key, float* value, float* context,
        int batch, int seq, int channels, int heads)
        => AttentionBackward(Gemm.BestPath, dQuery, dKey, dValue, rowDots, dContext, rowStats, dropoutBits, dropoutScale,
            query, key, value, context, batch, seq, channels, heads);

    /// <summary><see cref="AttentionBackward(float*,float*,float*,float*,float*,float*,uint*,float,float*,float*,float*,float*,int,int,int,int)"/> on a chosen vector width (tests).</summary>
    internal static void AttentionBackward(Gemm.KernelPath path, float* dQuery, float* dKey, float* dValue, float* rowDots, float* dContext,
        float* rowStats, uint* dropoutBits, float dropoutScale, float* query, float* key, float* value, float* context,
        int batch, int seq, int channels, int heads)
    {
        int headDim = channels / heads, batchHeads = batch * heads;
        var items = new AttentionItems(batchHeads, seq, 0);
        var pack = new TransposeKernel
        {
            Source = key, Second = value, Rows = seq, SourceRows = seq, Channels = channels, Heads = heads, HeadDim = headDim,
            Dots = rowDots, DOutput = dContext, Output = context,
        };
        float* keysT = TransposedScratch(batchHeads, headDim, seq, 2);
        pack.Run(keysT, batchHeads);
        RowParallel.For(2 * items.Count, 2 * items.WorkPerItem(headDim), new AttentionBackwardKernel
        {
            Items = items, Path = path, DQuery = dQuery, DKey = dKey, DValue = dValue, RowDots = rowDots, DContext = dContext,
            RowStats = rowStats, DropoutBits = dropoutBits, DropoutScale = dropoutScale,
            Query = query, Key = key, KeysT = keysT, ValuesT = keysT + (long)batchHeads * headDim * pack.Stride, KeysTStride = pack.Stride,
            Seq = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        });
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

        /// <summary>Mean multiply-adds of one item's two tile products (a block of rows against the keys it sees, on average).</summary>
        public long WorkPerItem(int headDim) => 2L * Math.Min(CausalBlock, Seq) * (Past + Seq / 2 + CausalBlock) * headDim;
    }

    /// <summary>
    /// Attention of <paramref name="newTokens"/> new queries per row against a key/value cache, for generation
    /// (a long prompt's prefill as well as one-token steps). <paramref name="keyCache"/>/<paramref name="valueCache"/>
    /// are [batch, cacheCapacity, channels] and already hold positions 0 .. past + newTokens − 1 (the new tokens' keys
    /// and values included); query i (position past + i) attends to positions 0 .. past + i. No dropout (inference).
    /// The same fused kernel as training: no [newTokens, past + newTokens] scores are stored. A few new tokens score
    /// the keys by dot products in place (transposing the whole cache would cost as much as the step itself).
    /// Writes context [batch, newTokens, channels].
    /// </summary>
    public static void AttentionForwardCached(float* context, float* query, float* keyCache, float* valueCache,
        int batch, int newTokens, int past, int cacheCapacity, int channels, int heads)
    {
        int headDim = channels / heads;
        var items = new AttentionItems(batch * heads, newTokens, past);
        float* keysT = null;
        int stride = 0;
        if (newTokens >= TransposeMinRows)
        {
            var pack = new TransposeKernel { Source = keyCache, Rows = past + newTokens, SourceRows = cacheCapacity, Channels = channels, Heads = heads, HeadDim = headDim };
            keysT = TransposedScratch(batch * heads, headDim, past + newTokens, 1);
            pack.Run(keysT, batch * heads);
            stride = pack.Stride;
        }
        RowParallel.For(items.Count, items.WorkPerItem(headDim), new AttentionForwardKernel
        {
            Items = items, Path = Gemm.BestPath, Context = context, Query = query, KeysT = keysT, KeysTStride = stride, Key = keyCache, Value = valueCache,
            Seq = newTokens, Past = past, KeyRows = cacheCapacity, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    /// <summary>Below this many new tokens, cached attention scores keys by dot products instead of transposing them.</summary>
    private const int TransposeMinRows = 8;

    /// <summary>Query rows per tile and key columns per tile: the masked triangle is skipped at this granularity. 32
    /// (a key tile's dropout bits for one query row are one word of the bit mask).</summary>
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
        if (generator is FastRandom fast)
        {
            // The same draws as below, written as bits directly (no float row, no per-element branch).
            for (int r = 0; r < rows; r++) fast.BernoulliBits(bits + (long)r * words, columns, keep);
            return;
        }
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
    [ThreadStatic] private static nint t_tileScratch;
    [ThreadStatic] private static long t_tileCapacity;
    [ThreadStatic] private static nint t_transposeScratch;
    [ThreadStatic] private static long t_transposeCapacity;

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

    /// <summary>
    /// The calling thread's buffer for <paramref name="copies"/> per-head transposes ([batchHeads, headDim, stride]);
    /// the caller owns it for the call (its tasks only read it), and a nested call runs on its own thread's buffer.
    /// </summary>
    private static float* TransposedScratch(int batchHeads, int headDim, int rows, int copies)
        => ThreadScratch.Grow(ref t_transposeScratch, ref t_transposeCapacity, (long)copies * batchHeads * headDim * TransposeKernel.StrideOf(rows));

    /// <summary>
    /// Per (batch, head): keys (and values, when <see cref="Second"/> is set) as [headDim, stride] rows, the columns past
    /// <see cref="Rows"/> zero, so a key tile's scores are a product with contiguous vectors; and, when
    /// <see cref="Dots"/> is set, the backward pass's row sums D_i = dContext_i·context_i.
    /// </summary>
    private struct TransposeKernel : IRangeKernel
    {
        public float* Source, Second, Dots, DOutput, Output, Target, SecondTarget;
        public int Rows, SourceRows, Channels, Heads, HeadDim;
        public readonly int Stride => StrideOf(Rows);

        /// <summary>
        /// Rows rounded up to whole tiles, plus 8 floats: a tile product reads 64 rows of the transpose at this stride, and
        /// at a multiple of 4 KB (1024 keys) they would all fall in the same L1 set and evict each other.
        /// </summary>
        public static int StrideOf(int rows) => (rows + CausalBlock - 1) / CausalBlock * CausalBlock + 8;

        /// <summary>Fills <paramref name="target"/> (and, with <see cref="Second"/>, the same size again after it).</summary>
        public void Run(float* target, int batchHeads)
        {
            Target = target;
            SecondTarget = target + (long)batchHeads * HeadDim * Stride;
            RowParallel.For(batchHeads, 2L * Rows * HeadDim, this);
        }

        public readonly void Execute(int start, int end)
        {
            for (int bh = start; bh < end; bh++)
            {
                int b = bh / Heads, h = bh % Heads;
                long offset = (long)b * SourceRows * Channels + (long)h * HeadDim, target = (long)bh * HeadDim * Stride;
                Transpose(Source + offset, Target + target);
                if (Second != null) Transpose(Second + offset, SecondTarget + target);
                if (Dots != null)
                    for (int i = 0; i < Rows; i++)
                        Dots[(long)bh * Rows + i] = TensorPrimitives.Dot(new ReadOnlySpan<float>(DOutput + offset + (long)i * Channels, HeadDim),
                            new ReadOnlySpan<float>(Output + offset + (long)i * Channels, HeadDim));
            }
        }

        private readonly void Transpose(float* source, float* target)
        {
            int stride = Stride, hd = HeadDim, c = Channels;
            for (int d = 0; d < hd; d++)
                new Span<float>(target + (long)d * stride + Rows, stride - Rows).Clear();
            // 8 source rows at a time: each target row gets 8 contiguous floats per pass.
            int i = 0;
            for (; i + 8 <= Rows; i += 8)
            {
                float* s = source + (long)i * c;
                for (int d = 0; d < hd; d++)
                {
                    float* t = target + (long)d * stride + i;
                    t[0] = s[d]; t[1] = s[c + d]; t[2] = s[2 * c + d]; t[3] = s[3 * c + d];
                    t[4] = s[4 * c + d]; t[5] = s[5 * c + d]; t[6] = s[6 * c + d]; t[7] = s[7 * c + d];
                }
            }
            for (; i < Rows; i++)
                for (int d = 0; d < hd; d++)
                    target[(long)d * stride + i] = source[(long)i * c + d];
        }
    }

    /// <summary>Per-thread tile scratch: the output accumulator and the score/weight tiles.</summary>
    private static float* TileScratch(long floats) => ThreadScratch.Grow(ref t_tileScratch, ref t_tileCapacity, floats);

    private struct AttentionForwardKernel : IRangeKernel
    {
        public AttentionItems Items;
        public Gemm.KernelPath Path;
        public float* Context, RowStats, Query, KeysT, Key, Value;
        public uint* DropoutBits;
        public float DropoutScale;
        public int KeysTStride, Seq, Past, KeyRows, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int n = Seq, c = Channels, hd = HeadDim, words = DropoutBitWords(n), tile = CausalBlock;
            float invSqrt = 1f / MathF.Sqrt(hd);
            float* o = TileScratch((long)tile * hd + tile * tile + 2 * tile), p = o + (long)tile * hd;
            float* max = p + tile * tile, sum = max + tile;
            for (int item = start; item < end; item++)
            {
                var (bh, rank) = Items[item];
                int b = bh / Heads, h = bh % Heads;
                int i0 = Items.LastFirst(rank) * tile, rows = Math.Min(tile, n - i0), visible = Past + i0 + rows;
                long headOffset = (long)b * KeyRows * c + (long)h * hd;
                float* q = Query + (long)b * n * c + (long)h * hd + (long)i0 * c;
                float* kT = KeysT != null ? KeysT + (long)bh * hd * KeysTStride : null;
                new Span<float>(o, rows * hd).Clear();
                for (int r = 0; r < rows; r++) { max[r] = float.NegativeInfinity; sum[r] = 0; }
                for (int j0 = 0; j0 < visible; j0 += tile)
                {
                    int cols = Math.Min(tile, visible - j0);
                    // scores of the tile: q·kᵀ (the transposed keys' columns past the last key are zero).
                    if (kT != null) TileProduct(Path, q, c, 1, kT + j0, KeysTStride, p, tile, rows, tile, hd, false);
                    else ScoresByDot(p, q, Key + headOffset + (long)j0 * c, rows, cols, hd, c);
                    for (int r = 0; r < rows; r++)
                    {
                        int i = i0 + r, length = Math.Min(tile, Past + i + 1 - j0);
                        uint bits = DropoutBits != null ? DropoutBits[((long)bh * n + i) * words + j0 / tile] : ~0u;
                        OnlineSoftmaxRow(Path, p + r * tile, length, invSqrt, ref max[r], ref sum[r], o + (long)r * hd, hd, bits, DropoutScale, DropoutBits != null);
                    }
                    // context accumulator += (dropped) weights·v over the tile's keys.
                    TileProduct(Path, p, tile, 1, Value + headOffset + (long)j0 * c, c, o, hd, rows, hd, cols, true);
                }
                float* ctx = Context + (long)b * n * c + (long)h * hd + (long)i0 * c;
                for (int r = 0; r < rows; r++)
                {
                    float inverse = 1f / sum[r];
                    TensorPrimitives.Multiply(new ReadOnlySpan<float>(o + (long)r * hd, hd), inverse, new Span<float>(ctx + (long)r * c, hd));
                    if (RowStats != null)
                    {
                        float* stats = RowStats + 2 * ((long)bh * n + i0 + r);
                        stats[0] = max[r];
                        stats[1] = inverse;
                    }
                }
            }
        }
    }

    /// <summary>s[r, j] = q_r·k_j for a few query rows (cached one-token steps): no transposed keys.</summary>
    private static void ScoresByDot(float* s, float* q, float* k, int rows, int cols, int hd, int c)
    {
        for (int r = 0; r < rows; r++)
        {
            var qRow = new ReadOnlySpan<float>(q + (long)r * c, hd);
            for (int j = 0; j < cols; j++) s[r * CausalBlock + j] = TensorPrimitives.Dot(qRow, new ReadOnlySpan<float>(k + (long)j * c, hd));
        }
    }

    private struct AttentionBackwardKernel : IRangeKernel
    {
        public AttentionItems Items;
        public Gemm.KernelPath Path;
        public float* DQuery, DKey, DValue, RowDots, DContext, RowStats, Query, Key, KeysT, ValuesT;
        public uint* DropoutBits;
        public float DropoutScale;
        public int KeysTStride, Seq, Channels, Heads, HeadDim;

        /// <summary>Items 2k and 2k + 1: the key tile and the query tile of rank k (both heaviest first).</summary>
        public readonly void Execute(int start, int end)
        {
            int tile = CausalBlock;
            float* p = TileScratch(2L * tile * tile), ds = p + tile * tile;
            for (int item = start; item < end; item++)
            {
                var (bh, rank) = Items[item >> 1];
                if ((item & 1) == 0) KeyTile(bh, rank * tile, p, ds);
                else QueryTile(bh, Items.LastFirst(rank) * tile, p, ds);
            }
        }

        /// <summary>
        /// The weights w (times the dropout mask, into <paramref name="p"/>) and dScores (into <paramref name="ds"/>) of
        /// query tile i0 against key tile j0, recomputed from the row statistics: scores = q·kᵀ, dW = dContext·vᵀ.
        /// </summary>
        private readonly void Recompute(int bh, int i0, int rows, int j0, float* p, float* ds)
        {
            int t = Seq, c = Channels, hd = HeadDim, words = DropoutBitWords(t), tile = CausalBlock;
            int b = bh / Heads, h = bh % Heads;
            long rowsOffset = (long)b * t * c + (long)h * hd + (long)i0 * c;
            TileProduct(Path, Query + rowsOffset, c, 1, KeysT + (long)bh * hd * KeysTStride + j0, KeysTStride, p, tile, rows, tile, hd, false);
            TileProduct(Path, DContext + rowsOffset, c, 1, ValuesT + (long)bh * hd * KeysTStride + j0, KeysTStride, ds, tile, rows, tile, hd, false);
            float invSqrt = 1f / MathF.Sqrt(hd);
            for (int r = 0; r < rows; r++)
            {
                long row = (long)bh * t + i0 + r;
                int length = Math.Min(tile, i0 + r + 1 - j0);
                uint bits = DropoutBits != null ? DropoutBits[row * words + j0 / tile] : ~0u;
                float* stats = RowStats + 2 * row;
                SoftmaxBackwardRow(Path, p + r * tile, ds + r * tile, length, invSqrt, stats[0], stats[1], RowDots[row],
                    bits, DropoutScale, DropoutBits != null);
            }
        }

        /// <summary>Key rows [j0, j0 + 32): dValue and dKey summed over the query tiles that see them, in tile order.</summary>
        private readonly void KeyTile(int bh, int j0, float* p, float* ds)
        {
            int t = Seq, c = Channels, hd = HeadDim, tile = CausalBlock, cols = Math.Min(tile, t - j0);
            int b = bh / Heads, h = bh % Heads;
            long headOffset = (long)b * t * c + (long)h * hd, keysOffset = headOffset + (long)j0 * c;
            for (int r = 0; r < cols; r++)
            {
                new Span<float>(DValue + keysOffset + (long)r * c, hd).Clear();
                new Span<float>(DKey + keysOffset + (long)r * c, hd).Clear();
            }
            for (int i0 = j0; i0 < t; i0 += tile)
            {
                int rows = Math.Min(tile, t - i0);
                Recompute(bh, i0, rows, j0, p, ds);
                long rowsOffset = headOffset + (long)i0 * c;
                // dValue += (dropped weights)ᵀ·dContext, dKey += dScoresᵀ·q: A's rows are the tile's columns.
                TileProduct(Path, p, 1, tile, DContext + rowsOffset, c, DValue + keysOffset, c, cols, hd, rows, true);
                TileProduct(Path, ds, 1, tile, Query + rowsOffset, c, DKey + keysOffset, c, cols, hd, rows, true);
            }
        }

        /// <summary>Query rows [i0, i0 + 32): dQuery = Σ over the key tiles they see of dScores·k, in tile order.</summary>
        private readonly void QueryTile(int bh, int i0, float* p, float* ds)
        {
            int t = Seq, c = Channels, hd = HeadDim, tile = CausalBlock, rows = Math.Min(tile, t - i0);
            int b = bh / Heads, h = bh % Heads;
            long headOffset = (long)b * t * c + (long)h * hd;
            float* dq = DQuery + headOffset + (long)i0 * c;
            for (int j0 = 0; j0 < i0 + rows; j0 += tile)
            {
                Recompute(bh, i0, rows, j0, p, ds);
                TileProduct(Path, ds, tile, 1, Key + headOffset + (long)j0 * c, c, dq, c, rows, hd, Math.Min(tile, t - j0), j0 > 0);
            }
        }
    }
}
