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
        int headDim = channels / heads, batchHeads = batch * heads;
        var items = new QueryBlocks(batchHeads, seq, 0);
        // Per head: queries transposed, so that a key tile's scores are a product with contiguous vectors.
        var scratch = new AttentionScratch(batchHeads, headDim, seq, transposes: 1, copies: 0);
        new HeadPack
        {
            Channels = channels, Heads = heads, HeadDim = headDim,
            Transpose0 = new PackSource(query, scratch.Transposed(0), seq, seq),
        }.Run(batchHeads);
        var rows = new HeadRows(null, (long)seq * channels, headDim, channels);
        RowParallel.For(items.Count, items.WorkPerItem(headDim), new TransposedForwardKernel
        {
            Items = items, Path = path, Context = context, RowStats = rowStats, DropoutBits = dropoutBits, DropoutScale = dropoutScale,
            Key = rows.On(key), Value = rows.On(value), QueriesT = scratch.Transposed(0), QueriesTStride = scratch.Stride,
            Seq = seq, Past = 0, Channels = channels, Heads = heads, HeadDim = headDim,
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
    /// FlashAttention-2's pass: each key tile meets the query tiles that see it once, recomputing scores and
    /// dW = dContext·vᵀ, and makes all three gradients from that pair (5 tile products): dValue and dKey summed in the
    /// key tile's own accumulators, dQuery added into a head-major buffer. The key tiles of a head are cut into
    /// <see cref="AttentionBackwardPlan.Groups"/> groups (a work item each) with a dQuery buffer per group, summed at the
    /// end in group order: no two items write the same element, and the groups depend on the shapes only, so the bits
    /// do not depend on the thread count.
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
        var plan = new AttentionBackwardPlan(batchHeads, seq);
        var scratch = new AttentionScratch(batchHeads, headDim, seq, BackwardTransposes, BackwardCopies + plan.Groups);
        new HeadPack
        {
            Channels = channels, Heads = heads, HeadDim = headDim,
            Transpose0 = new PackSource(key, scratch.Transposed(0), seq, seq),
            Transpose1 = new PackSource(value, scratch.Transposed(1), seq, seq),
            Copy0 = new PackSource(query, scratch.Copy(0), seq, seq),
            Copy1 = new PackSource(dContext, scratch.Copy(1), seq, seq),
            Copy2 = new PackSource(key, scratch.Copy(2), seq, seq),
            Dots = rowDots, DOutput = dContext, Output = context,
        }.Run(batchHeads);
        RowParallel.For(plan.Count, plan.WorkPerItem(headDim), new AttentionBackwardKernel
        {
            Plan = plan, Path = path, DKey = dKey, DValue = dValue, RowDots = rowDots, RowStats = rowStats,
            DropoutBits = dropoutBits, DropoutScale = dropoutScale,
            Query = scratch.Copy(0), DOutput = scratch.Copy(1), Key = scratch.Copy(2), DQueryParts = scratch.Copy(3),
            KeysT = scratch.Transposed(0), ValuesT = scratch.Transposed(1), KeysTStride = scratch.Stride,
            Seq = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        });
        var blocks = new AttentionItems(batchHeads, seq, 0);
        RowParallel.For(blocks.Count, (long)CausalBlock * headDim * plan.Groups, new DQuerySumKernel
        {
            Blocks = blocks, Groups = plan.Groups, Parts = scratch.Copy(3), DQuery = dQuery,
            Seq = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    /// <summary>The backward pass's per-head copies: keys and values transposed; queries, dContext and keys head-major (plus a dQuery buffer per group).</summary>
    private const int BackwardTransposes = 2, BackwardCopies = 3;

    /// <summary>Bytes of the calling thread's scratch that <see cref="AttentionBackward(float*,float*,float*,float*,float*,float*,uint*,float,float*,float*,float*,float*,int,int,int,int)"/> needs (the forward pass needs less).</summary>
    internal static long AttentionBackwardScratchBytes(int batch, int seq, int channels, int heads)
    {
        int batchHeads = batch * heads, headDim = channels / heads;
        int copies = BackwardCopies + AttentionBackwardPlan.GroupsFor(batchHeads, seq);
        return sizeof(float) * AttentionScratch.Floats(batchHeads, headDim, seq, BackwardTransposes, copies);
    }

    /// <summary>
    /// The work items of the attention backward pass: (batch·head, group of key tiles). A head's key tiles are paired
    /// j with tiles − 1 − j (a causal key tile is seen by one query tile per tile after it, so each pair costs the same)
    /// and the pairs dealt round-robin to <see cref="Groups"/> groups: enough items for every thread of a 32-core machine
    /// at the book's shapes, yet a function of the shapes alone (results must not depend on the thread count).
    /// Group g's first key tile is tile g, so its dQuery buffer holds query tiles g onwards.
    /// </summary>
    internal readonly struct AttentionBackwardPlan
    {
        public readonly int BatchHeads, Tiles, Pairs, Groups;

        /// <summary>Items wanted at least (64: two per thread on 32 threads), when the heads alone are fewer.</summary>
        public const int MinItems = 64;

        public AttentionBackwardPlan(int batchHeads, int seq)
        {
            BatchHeads = batchHeads;
            Tiles = (seq + CausalBlock - 1) / CausalBlock;
            Pairs = (Tiles + 1) / 2;
            Groups = GroupsFor(batchHeads, seq);
        }

        /// <summary>Groups per head: the dQuery buffers the backward pass needs (<c>MemoryBudget</c> counts them).</summary>
        public static int GroupsFor(int batchHeads, int seq)
        {
            int pairs = ((seq + CausalBlock - 1) / CausalBlock + 1) / 2;
            return Math.Max(1, Math.Min(pairs, (MinItems + batchHeads - 1) / batchHeads));
        }

        public int Count => BatchHeads * Groups;

        /// <summary>Item → (batch·head, group): the groups with the most pairs (the lowest) first.</summary>
        public (int BatchHead, int Group) this[int item] => (item % BatchHeads, item / BatchHeads);

        /// <summary>
        /// Group <paramref name="group"/>'s key tiles in ascending order into <paramref name="tiles"/> (room for
        /// <see cref="Tiles"/>); returns how many: the low tile of pairs group, group + Groups, ..., then their partners.
        /// </summary>
        public int KeyTiles(int group, Span<int> tiles)
        {
            int count = 0, last = group;
            for (int u = group; u < Pairs; u += Groups) { tiles[count++] = u; last = u; }
            for (int u = last; u >= group; u -= Groups)
                if (Tiles - 1 - u != u) tiles[count++] = Tiles - 1 - u;
            return count;
        }

        /// <summary>Mean multiply-adds of one item: 5 tile products per (query tile, key tile) pair.</summary>
        public long WorkPerItem(int headDim) => 5L * CausalBlock * CausalBlock * headDim * ((long)Tiles * (Tiles + 1) / 2) / Groups;
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
    /// The work items of the attention forward pass: (batch·head, block of up to <see cref="MaxTilesPerBlock"/> query
    /// tiles). A block meets each key tile once for all its query tiles, so the key and value tile read into L1 serves
    /// up to 128 query rows instead of 32 (read per query tile, a 1024-key head's keys and values, ~0.5 MB, came from L3
    /// for every 32 rows). Items are head-major (consecutive items share a head's keys in L2), a head's blocks dealt
    /// last, first, second last, second, ... so that any run of items costs about the same (the pool's tasks are runs).
    /// Blocks shrink when a head has few of them and the heads are few, to keep <see cref="MinItems"/> items for the
    /// threads; each row's operations do not depend on the blocks, so neither do the results.
    /// </summary>
    internal readonly struct QueryBlocks
    {
        public const int MaxTilesPerBlock = 4;

        /// <summary>Items wanted at least (64: two per thread on 32 threads), as in <see cref="AttentionBackwardPlan"/>.</summary>
        public const int MinItems = 64;

        public readonly int BatchHeads, Seq, Past, Tiles, TilesPerBlock, Blocks;

        public QueryBlocks(int batchHeads, int seq, int past)
        {
            (BatchHeads, Seq, Past) = (batchHeads, seq, past);
            Tiles = (seq + CausalBlock - 1) / CausalBlock;
            TilesPerBlock = MaxTilesPerBlock;
            while (TilesPerBlock > 1 && (long)batchHeads * ((Tiles + TilesPerBlock - 1) / TilesPerBlock) < MinItems) TilesPerBlock /= 2;
            Blocks = (Tiles + TilesPerBlock - 1) / TilesPerBlock;
        }

        public int Count => BatchHeads * Blocks;

        /// <summary>Item → (batch·head, block): a head's items in a row, its blocks last, first, second last, second, ...</summary>
        public (int BatchHead, int Block) this[int item]
        {
            get
            {
                int u = item % Blocks;
                return (item / Blocks, (u & 1) == 0 ? Blocks - 1 - u / 2 : u / 2);
            }
        }

        /// <summary>Mean multiply-adds of one item's two tile products (a block of rows against the keys it sees, on average).</summary>
        public long WorkPerItem(int headDim) => 2L * Math.Min(TilesPerBlock * CausalBlock, Seq) * (Past + Seq / 2 + CausalBlock) * headDim;
    }

    /// <summary>
    /// Attention of <paramref name="newTokens"/> new queries per row against a key/value cache, for generation
    /// (a long prompt's prefill as well as one-token steps). <paramref name="keyCache"/>/<paramref name="valueCache"/>
    /// are [batch, cacheCapacity, channels] and already hold positions 0 .. past + newTokens − 1 (the new tokens' keys
    /// and values included); query i (position past + i) attends to positions 0 .. past + i. No dropout (inference).
    /// The same fused kernel as training: no [newTokens, past + newTokens] scores are stored. A few new tokens score
    /// the keys by dot products in place (transposing the whole cache would cost as much as the step itself).
    /// <paramref name="kernelRows"/> picks the kernel (default: <paramref name="newTokens"/>; see <see cref="CachedAttentionTiles"/>):
    /// the rest of a prompt whose first positions were reused passes the whole prompt's length, so that every position
    /// comes out as a cold prefill of the prompt computes it (each kernel forms a row the same way wherever its chunk starts).
    /// Writes context [batch, newTokens, channels].
    /// </summary>
    public static void AttentionForwardCached(float* context, float* query, float* keyCache, float* valueCache,
        int batch, int newTokens, int past, int cacheCapacity, int channels, int heads, int kernelRows = 0)
    {
        int headDim = channels / heads, batchHeads = batch * heads;
        var key = new HeadRows(keyCache, (long)cacheCapacity * channels, headDim, channels);
        var value = new HeadRows(valueCache, (long)cacheCapacity * channels, headDim, channels);
        if (CachedAttentionTiles(kernelRows > 0 ? kernelRows : newTokens))
        {
            var scratch = new AttentionScratch(batchHeads, headDim, newTokens, transposes: 1, copies: 0);
            new HeadPack
            {
                Channels = channels, Heads = heads, HeadDim = headDim,
                Transpose0 = new PackSource(query, scratch.Transposed(0), newTokens, newTokens),
            }.Run(batchHeads);
            var blocks = new QueryBlocks(batchHeads, newTokens, past);
            RowParallel.For(blocks.Count, blocks.WorkPerItem(headDim), new TransposedForwardKernel
            {
                Items = blocks, Path = Gemm.BestPath, Context = context, Key = key, Value = value,
                QueriesT = scratch.Transposed(0), QueriesTStride = scratch.Stride,
                Seq = newTokens, Past = past, Channels = channels, Heads = heads, HeadDim = headDim,
            });
            return;
        }
        var items = new AttentionItems(batchHeads, newTokens, past);
        RowParallel.For(items.Count, items.WorkPerItem(headDim), new AttentionForwardKernel
        {
            Items = items, Path = Gemm.BestPath, Context = context,
            Query = new HeadRows(query, (long)newTokens * channels, headDim, channels), Key = key, Value = value,
            Seq = newTokens, Past = past, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    /// <summary>Below this many new tokens, cached attention scores keys by dot products instead of transposing them.</summary>
    private const int TransposeMinRows = 8;

    /// <summary>Whether cached attention over this many new rows runs the transposed tiles (else dot products per row).</summary>
    internal static bool CachedAttentionTiles(int rows) => rows >= TransposeMinRows;

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
            // The same draws as below, written as bits directly (no float row, no per-element branch), in parallel
            // pieces of rows that each start from the stream's state that many draws on: the serial bits exactly.
            // A mask too small to split is drawn in place (a jump is up to 63 polynomial squarings: a small layer's whole draw).
            if (RowParallel.TaskCount(rows, columns, Workers.Count) <= 1)
            {
                for (int r = 0; r < rows; r++) fast.BernoulliBits(bits + (long)r * words, columns, keep);
                return;
            }
            RowParallel.For(rows, columns, new MaskBitsKernel
            {
                Bits = bits, Words = words, Columns = columns, Threshold = FastRandom.BernoulliThreshold(keep), Generator = fast,
            });
            fast.Skip((long)rows * columns);
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

    /// <summary>Rows [start, end) of a <see cref="FastRandom"/> dropout mask, from the stream's state start·columns draws on.</summary>
    private struct MaskBitsKernel : IRangeKernel
    {
        public uint* Bits;
        public int Words, Columns;
        public uint Threshold;
        public FastRandom Generator;

        public readonly void Execute(int start, int end)
        {
            // Four runs of rows at once (one per vector lane), each from its own jumped state, then the last rows.
            int run = Vector256.IsHardwareAccelerated ? (end - start) / 4 : 0;
            Span<FastRandom.State> lanes = stackalloc FastRandom.State[4];
            lanes[0] = Generator.StateAhead((long)start * Columns);
            if (run > 0)
            {
                FastRandom.Spread(lanes, (long)run * Columns);
                FastRandom.BernoulliBits4(lanes, Bits + (long)start * Words, (long)run * Words, run, Words, Columns, Threshold);
                lanes[0] = lanes[3];
            }
            for (int r = start + 4 * run; r < end; r++) FastRandom.BernoulliBits(ref lanes[0], Bits + (long)r * Words, Columns, Threshold);
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

    /// <summary>Rows of one head of a [batch, rows, channels] tensor or of a head-major copy: row i of (b, h) at <c>At(b, h, i)</c>.</summary>
    private readonly struct HeadRows(float* data, long batch, long head, int row)
    {
        public readonly float* Data = data;
        public readonly long Batch = batch, Head = head;
        public readonly int Row = row;
        public float* At(int b, int h, int i) => Data + b * Batch + h * Head + (long)i * Row;

        /// <summary>The same layout over another tensor.</summary>
        public HeadRows On(float* data) => new(data, Batch, Head, Row);
    }

    /// <summary>
    /// The calling thread's buffer for a call's per-head copies: <c>transposes</c> × [batchHeads, headDim, stride]
    /// (rows transposed, the columns past the last row zero) then <c>copies</c> × [batchHeads, rows, headDim]
    /// (head-major). The caller owns it for the call (its tasks only read it, or write disjoint parts), and a nested
    /// call runs on its own thread's buffer.
    /// </summary>
    private readonly struct AttentionScratch
    {
        private readonly float* _data;
        private readonly int _batchHeads, _headDim, _rows, _transposes;
        public readonly int Stride;

        public AttentionScratch(int batchHeads, int headDim, int rows, int transposes, int copies)
        {
            (_batchHeads, _headDim, _rows, _transposes) = (batchHeads, headDim, rows, transposes);
            Stride = StrideOf(rows);
            _data = ThreadScratch.Grow(ref t_transposeScratch, ref t_transposeCapacity, Floats(batchHeads, headDim, rows, transposes, copies));
        }

        public static long Floats(int batchHeads, int headDim, int rows, int transposes, int copies)
            => (long)batchHeads * headDim * ((long)transposes * StrideOf(rows) + (long)copies * rows);

        /// <summary>
        /// Rows rounded up to whole tiles, plus 8 floats: a tile product reads 64 rows of a transpose at this stride, and
        /// at a multiple of 4 KB (1024 keys) they would all fall in the same L1 set and evict each other.
        /// </summary>
        public static int StrideOf(int rows) => (rows + CausalBlock - 1) / CausalBlock * CausalBlock + 8;

        public float* Transposed(int index) => _data + (long)index * _batchHeads * _headDim * Stride;

        public float* Copy(int index) => Transposed(_transposes) + (long)index * _batchHeads * _rows * _headDim;
    }

    /// <summary>One tensor to lay out per head: <see cref="Rows"/> rows of each batch row's <see cref="SourceRows"/>.</summary>
    private readonly struct PackSource(float* from, float* to, int rows, int sourceRows)
    {
        public readonly float* From = from, To = to;
        public readonly int Rows = rows, SourceRows = sourceRows;
    }

    /// <summary>
    /// Per (batch, head): up to two tensors transposed ([headDim, stride] rows, the columns past the last row zero, so
    /// a key tile's scores are a product with contiguous vectors), up to three copied head-major ([rows, headDim]: a
    /// tile is 8 KB in a row instead of 32 rows 3 KB apart, which share a quarter of the L1 sets), and, when
    /// <see cref="Dots"/> is set, the backward pass's row sums D_i = dContext_i·context_i.
    /// </summary>
    private struct HeadPack : IRangeKernel
    {
        public PackSource Transpose0, Transpose1, Copy0, Copy1, Copy2;
        public float* Dots, DOutput, Output;
        public int Channels, Heads, HeadDim;

        public readonly void Run(int batchHeads)
        {
            long rows = Math.Max(Math.Max(Transpose0.Rows, Copy0.Rows), Copy1.Rows);
            RowParallel.For(batchHeads, 5L * rows * HeadDim, this);
        }

        public readonly void Execute(int start, int end)
        {
            for (int bh = start; bh < end; bh++)
            {
                Transpose(Transpose0, bh);
                Transpose(Transpose1, bh);
                Copy(Copy0, bh);
                Copy(Copy1, bh);
                Copy(Copy2, bh);
                if (Dots == null) continue;
                int rows = Copy0.Rows;
                long offset = (long)(bh / Heads) * rows * Channels + (long)(bh % Heads) * HeadDim;
                for (int i = 0; i < rows; i++)
                    Dots[(long)bh * rows + i] = TensorPrimitives.Dot(new ReadOnlySpan<float>(DOutput + offset + (long)i * Channels, HeadDim),
                        new ReadOnlySpan<float>(Output + offset + (long)i * Channels, HeadDim));
            }
        }

        private readonly float* SourceOf(PackSource s, int bh) => s.From + (long)(bh / Heads) * s.SourceRows * Channels + (long)(bh % Heads) * HeadDim;

        private readonly void Copy(PackSource s, int bh)
        {
            if (s.From == null) return;
            float* source = SourceOf(s, bh), target = s.To + (long)bh * s.Rows * HeadDim;
            for (int i = 0; i < s.Rows; i++)
                new ReadOnlySpan<float>(source + (long)i * Channels, HeadDim).CopyTo(new Span<float>(target + (long)i * HeadDim, HeadDim));
        }

        private readonly void Transpose(PackSource s, int bh)
        {
            if (s.From == null) return;
            int rows = s.Rows, stride = AttentionScratch.StrideOf(rows), hd = HeadDim, c = Channels;
            float* source = SourceOf(s, bh), target = s.To + (long)bh * hd * stride;
            for (int d = 0; d < hd; d++)
                new Span<float>(target + (long)d * stride + rows, stride - rows).Clear();
            // 8 source rows at a time: each target row gets 8 contiguous floats per pass.
            int i = 0;
            for (; i + 8 <= rows; i += 8)
            {
                float* r = source + (long)i * c;
                for (int d = 0; d < hd; d++)
                {
                    float* t = target + (long)d * stride + i;
                    t[0] = r[d]; t[1] = r[c + d]; t[2] = r[2 * c + d]; t[3] = r[3 * c + d];
                    t[4] = r[4 * c + d]; t[5] = r[5 * c + d]; t[6] = r[6 * c + d]; t[7] = r[7 * c + d];
                }
            }
            for (; i < rows; i++)
                for (int d = 0; d < hd; d++)
                    target[(long)d * stride + i] = source[(long)i * c + d];
        }
    }

    /// <summary>Per-thread tile scratch: the output accumulator and the score/weight tiles.</summary>
    private static float* TileScratch(long floats) => ThreadScratch.Grow(ref t_tileScratch, ref t_tileCapacity, floats);

    /// <summary>
    /// The forward pass of a few new queries against a cache (below <see cref="TransposeMinRows"/>: decoding steps),
    /// row by row: each query's scores by dot products in place, its online softmax along the row
    /// (<see cref="OnlineSoftmaxRow"/>), then o += weights·v. No dropout, nothing kept for a backward pass.
    /// </summary>
    private struct AttentionForwardKernel : IRangeKernel
    {
        public AttentionItems Items;
        public Gemm.KernelPath Path;
        public float* Context;
        public HeadRows Query, Key, Value;
        public int Seq, Past, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int n = Seq, c = Channels, hd = HeadDim, tile = CausalBlock;
            float invSqrt = 1f / MathF.Sqrt(hd);
            float* o = TileScratch((long)tile * hd + tile * tile + 2 * tile), p = o + (long)tile * hd;
            float* max = p + tile * tile, sum = max + tile;
            for (int item = start; item < end; item++)
            {
                var (bh, rank) = Items[item];
                int b = bh / Heads, h = bh % Heads;
                int i0 = Items.LastFirst(rank) * tile, rows = Math.Min(tile, n - i0), visible = Past + i0 + rows;
                float* q = Query.At(b, h, i0);
                new Span<float>(o, rows * hd).Clear();
                for (int r = 0; r < rows; r++) { max[r] = float.NegativeInfinity; sum[r] = 0; }
                for (int j0 = 0; j0 < visible; j0 += tile)
                {
                    int cols = Math.Min(tile, visible - j0);
                    ScoresByDot(p, q, Query.Row, Key.At(b, h, j0), Key.Row, rows, cols, hd);
                    for (int r = 0; r < rows; r++)
                    {
                        int length = Math.Min(tile, Past + i0 + r + 1 - j0);
                        OnlineSoftmaxRow(Path, p + r * tile, length, invSqrt, ref max[r], ref sum[r], o + (long)r * hd, hd);
                    }
                    // context accumulator += weights·v over the tile's keys.
                    TileProduct(Path, p, tile, 1, Value.At(b, h, j0), Value.Row, o, hd, rows, hd, cols, true);
                }
                float* ctx = Context + (long)b * n * c + (long)h * hd + (long)i0 * c;
                for (int r = 0; r < rows; r++)
                    TensorPrimitives.Multiply(new ReadOnlySpan<float>(o + (long)r * hd, hd), 1f / sum[r], new Span<float>(ctx + (long)r * c, hd));
            }
        }
    }

    /// <summary>s[r, j] = q_r·k_j for a few query rows (cached one-token steps): no transposed keys.</summary>
    private static void ScoresByDot(float* s, float* q, int qRow, float* k, int kRow, int rows, int cols, int hd)
    {
        for (int r = 0; r < rows; r++)
        {
            var qSpan = new ReadOnlySpan<float>(q + (long)r * qRow, hd);
            for (int j = 0; j < cols; j++) s[r * CausalBlock + j] = TensorPrimitives.Dot(qSpan, new ReadOnlySpan<float>(k + (long)j * kRow, hd));
        }
    }

    private struct AttentionBackwardKernel : IRangeKernel
    {
        public AttentionBackwardPlan Plan;
        public Gemm.KernelPath Path;
        public float* DKey, DValue, RowDots, RowStats, Query, DOutput, Key, DQueryParts, KeysT, ValuesT;
        public uint* DropoutBits;
        public float DropoutScale;
        public int KeysTStride, Seq, Channels, Heads, HeadDim;

        /// <summary>Item (head, group): the group's key tiles in ascending order (pairs g, g + groups, ...: low tiles, then their partners).</summary>
        public readonly void Execute(int start, int end)
        {
            int tile = CausalBlock, hd = HeadDim;
            float* p = TileScratch(2L * tile * tile + 2L * tile * hd), ds = p + tile * tile, dk = ds + tile * tile, dv = dk + (long)tile * hd;
            Span<int> keyTiles = stackalloc int[Plan.Tiles];
            for (int item = start; item < end; item++)
            {
                var (bh, g) = Plan[item];
                int count = Plan.KeyTiles(g, keyTiles);
                for (int k = 0; k < count; k++) KeyTile(bh, g, keyTiles[k], p, ds, dk, dv);
            }
        }

        /// <summary>
        /// Key rows of tile <paramref name="jt"/>: for every query tile that sees them, the weights and dScores
        /// recomputed, then dValue += (dropped weights)ᵀ·dContext and dKey += dScoresᵀ·q in this tile's accumulators,
        /// and group <paramref name="g"/>'s dQuery += dScores·k (its first tile, g, writes instead of adding).
        /// </summary>
        private readonly void KeyTile(int bh, int g, int jt, float* p, float* ds, float* dk, float* dv)
        {
            int t = Seq, c = Channels, hd = HeadDim, tile = CausalBlock, j0 = jt * tile, cols = Math.Min(tile, t - j0);
            int words = DropoutBitWords(t);
            float invSqrt = 1f / MathF.Sqrt(hd);
            long head = (long)bh * t * hd;
            float* q = Query + head, dO = DOutput + head, k = Key + head + (long)j0 * hd;
            float* dq = DQueryParts + (long)g * Plan.BatchHeads * t * hd + head;
            float* kT = KeysT + (long)bh * hd * KeysTStride + j0, vT = ValuesT + (long)bh * hd * KeysTStride + j0;
            for (int i0 = j0; i0 < t; i0 += tile)
            {
                int rows = Math.Min(tile, t - i0);
                bool first = i0 == j0;
                // scores = q·kᵀ and dW = dContext·vᵀ of the pair, then weights and dScores row by row.
                TileProduct(Path, q + (long)i0 * hd, hd, 1, kT, KeysTStride, p, tile, rows, tile, hd, false);
                TileProduct(Path, dO + (long)i0 * hd, hd, 1, vT, KeysTStride, ds, tile, rows, tile, hd, false);
                for (int r = 0; r < rows; r++)
                {
                    long row = (long)bh * t + i0 + r;
                    int length = Math.Min(tile, i0 + r + 1 - j0);
                    uint bits = DropoutBits != null ? DropoutBits[row * words + jt] : ~0u;
                    float* stats = RowStats + 2 * row;
                    SoftmaxBackwardRow(Path, p + r * tile, ds + r * tile, length, invSqrt, stats[0], stats[1], RowDots[row],
                        bits, DropoutScale, DropoutBits != null);
                }
                // dValue (+)= (dropped weights)ᵀ·dContext, dKey (+)= dScoresᵀ·q: A's rows are the tile's columns.
                TileProduct(Path, p, 1, tile, dO + (long)i0 * hd, hd, dv, hd, cols, hd, rows, !first);
                TileProduct(Path, ds, 1, tile, q + (long)i0 * hd, hd, dk, hd, cols, hd, rows, !first);
                TileProduct(Path, ds, tile, 1, k, hd, dq + (long)i0 * hd, hd, rows, hd, cols, jt != g);
            }
            int b = bh / Heads, h = bh % Heads;
            long keys = (long)b * t * c + (long)h * hd + (long)j0 * c;
            for (int r = 0; r < cols; r++)
            {
                new ReadOnlySpan<float>(dv + (long)r * hd, hd).CopyTo(new Span<float>(DValue + keys + (long)r * c, hd));
                new ReadOnlySpan<float>(dk + (long)r * hd, hd).CopyTo(new Span<float>(DKey + keys + (long)r * c, hd));
            }
        }
    }

    /// <summary>dQuery rows of a (head, query tile): the groups' head-major buffers summed in group order (group g holds tiles g onwards).</summary>
    private struct DQuerySumKernel : IRangeKernel
    {
        public AttentionItems Blocks;
        public float* Parts, DQuery;
        public int Groups, Seq, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int t = Seq, hd = HeadDim;
            for (int item = start; item < end; item++)
            {
                var (bh, rank) = Blocks[item];
                int it = Blocks.LastFirst(rank), i0 = it * CausalBlock, rows = Math.Min(CausalBlock, t - i0);
                int parts = Math.Min(Groups, it + 1);
                float* target = DQuery + (long)(bh / Heads) * t * Channels + (long)(bh % Heads) * hd + (long)i0 * Channels;
                float* source = Parts + ((long)bh * t + i0) * hd;
                long groupStride = (long)Blocks.BatchHeads * t * hd;
                for (int r = 0; r < rows; r++)
                {
                    var row = new Span<float>(target + (long)r * Channels, hd);
                    new ReadOnlySpan<float>(source + (long)r * hd, hd).CopyTo(row);
                    for (int g = 1; g < parts; g++)
                        TensorPrimitives.Add(row, new ReadOnlySpan<float>(source + g * groupStride + (long)r * hd, hd), row);
                }
            }
        }
    }
}
