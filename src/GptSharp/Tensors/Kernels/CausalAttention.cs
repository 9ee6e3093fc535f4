using System.Numerics.Tensors;

namespace GptSharp.Tensors;

public static unsafe partial class Kernels
{
    /// <summary>
    /// The book's causal multi-head attention core, given the projected queries, keys and values
    /// [batch, seq, channels] (head h owns columns h·headDim .. (h+1)·headDim − 1). Per (batch, head):
    /// scores = q·kᵀ, future positions masked, weights = softmax(scores / √headDim) saved into
    /// <paramref name="weights"/> [batch, heads, seq, seq] (zeros above the diagonal), dropout applied with
    /// <paramref name="dropoutMask"/> (same layout, drawn by the caller in one go as PyTorch does; null for none)
    /// into <paramref name="droppedWeights"/> (may be null when there is no mask), and context = weights·v
    /// written back into [batch, seq, channels] (<c>transpose(1, 2).view(b, seq, d_out)</c> for free).
    /// The work items are (batch, head, block of <see cref="CausalBlock"/> query rows): 192 at the book's
    /// shapes, so 16 or 32 threads all get work (batch × heads alone is 24). The GEMMs inside run single-threaded.
    /// </summary>
    public static void AttentionForward(float* context, float* weights, float* droppedWeights, float* dropoutMask,
        float* query, float* key, float* value, int batch, int seq, int channels, int heads)
    {
        int headDim = channels / heads;
        var items = new AttentionItems(batch * heads, seq);
        RowParallel.For(items.Count, items.WorkPerItem(headDim), new AttentionForwardKernel
        {
            Items = items, Context = context, Weights = weights, DroppedWeights = dropoutMask != null ? droppedWeights : weights,
            DropoutMask = dropoutMask, Query = query, Key = key, Value = value,
            Seq = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    /// <summary>
    /// Backward of <see cref="AttentionForward"/>: from dContext [batch, seq, channels] to dQuery, dKey, dValue
    /// (overwritten). <paramref name="dWeights"/> [batch, heads, seq, seq] is scratch (it first holds the dropped
    /// weights, recomputed from <paramref name="weights"/> and <paramref name="dropoutMask"/>, so the forward pass need not keep them).
    /// Softmax backward: dScore_ij = w_ij·(dW_ij − Σ_k w_ik·dW_ik), times the 1/√headDim scale.
    /// </summary>
    /// <remarks>
    /// Split over (batch, head, block) items like the forward pass, in phases: a key block's dValue and dKey sum over
    /// the query rows of later blocks, so each phase ends before the next one overwrites what it reads. Every element
    /// is computed by the same operations as a whole-head loop, so results do not depend on the thread count.
    /// </remarks>
    public static void AttentionBackward(float* dQuery, float* dKey, float* dValue, float* dWeights, float* dContext,
        float* weights, float* dropoutMask, float* query, float* key, float* value,
        int batch, int seq, int channels, int heads)
    {
        int headDim = channels / heads;
        var items = new AttentionItems(batch * heads, seq);
        var kernel = new AttentionBackwardKernel
        {
            Items = items, DQuery = dQuery, DKey = dKey, DValue = dValue, DWeights = dWeights, DContext = dContext,
            Weights = weights, DropoutMask = dropoutMask,
            Query = query, Key = key, Value = value,
            Seq = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        };
        long work = items.WorkPerItem(headDim);
        if (dropoutMask != null)
        {
            kernel.Phase = BackwardPhase.RebuildDroppedWeights;
            RowParallel.For(items.Count, (long)CausalBlock * seq, kernel);
        }
        kernel.Phase = BackwardPhase.ValueGradient;
        RowParallel.For(items.Count, work, kernel);
        kernel.Phase = BackwardPhase.ScoreGradient;
        RowParallel.For(items.Count, work, kernel);
        kernel.Phase = BackwardPhase.QueryKeyGradients;
        RowParallel.For(items.Count, 2 * work, kernel);
    }

    /// <summary>
    /// The work items of causal attention: (batch·head, block of <see cref="CausalBlock"/> query — or key — rows),
    /// ranked so that the first items are the most expensive (the pool hands them out first, the cheap ones fill the gaps).
    /// </summary>
    internal readonly struct AttentionItems(int batchHeads, int seq)
    {
        public readonly int BatchHeads = batchHeads;
        public readonly int Seq = seq;
        public readonly int Blocks = (seq + CausalBlock - 1) / CausalBlock;
        public int Count => BatchHeads * Blocks;

        /// <summary>Item → (batch·head, rank): rank 0 for the first <see cref="BatchHeads"/> items, 1 for the next, ...</summary>
        public (int BatchHead, int Rank) this[int item] => (item % BatchHeads, item / BatchHeads);

        /// <summary>The block of rank <paramref name="rank"/> when the cost grows with the block index (query blocks: causal rows see more keys).</summary>
        public int LastFirst(int rank) => Blocks - 1 - rank;

        /// <summary>Mean multiply-adds of one item's GEMMs (the causal half of a head's two products, over its blocks).</summary>
        public long WorkPerItem(int headDim) => 2L * Seq * (Seq / 2 + CausalBlock) * headDim / Blocks;
    }

    private enum BackwardPhase { RebuildDroppedWeights, ValueGradient, ScoreGradient, QueryKeyGradients }

    /// <summary>
    /// Attention of <paramref name="newTokens"/> new queries per row against a key/value cache, for generation.
    /// <paramref name="keyCache"/>/<paramref name="valueCache"/> are [batch, cacheCapacity, channels] and already hold
    /// positions 0 .. past + newTokens − 1 (the new tokens' keys and values included); query i (position past + i)
    /// attends to positions 0 .. past + i. No dropout (inference). <paramref name="scores"/> is scratch of
    /// batch·heads·newTokens·(past + newTokens) floats. Writes context [batch, newTokens, channels].
    /// </summary>
    public static void AttentionForwardCached(float* context, float* scores, float* query, float* keyCache, float* valueCache,
        int batch, int newTokens, int past, int cacheCapacity, int channels, int heads)
    {
        int headDim = channels / heads;
        RowParallel.For(batch * heads, 2L * newTokens * (past + newTokens) * headDim, new CachedAttentionKernel
        {
            Context = context, Scores = scores, Query = query, KeyCache = keyCache, ValueCache = valueCache,
            NewTokens = newTokens, Past = past, CacheCapacity = cacheCapacity, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    private struct CachedAttentionKernel : IRangeKernel
    {
        public float* Context, Scores, Query, KeyCache, ValueCache;
        public int NewTokens, Past, CacheCapacity, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int n = NewTokens, total = Past + NewTokens, c = Channels, hd = HeadDim;
            float invSqrt = 1f / MathF.Sqrt(hd);
            for (int bh = start; bh < end; bh++)
            {
                int b = bh / Heads, h = bh % Heads;
                float* q = Query + (long)b * n * c + (long)h * hd;
                float* k = KeyCache + (long)b * CacheCapacity * c + (long)h * hd;
                float* v = ValueCache + (long)b * CacheCapacity * c + (long)h * hd;
                float* w = Scores + (long)bh * n * total;
                Gemm.MatMul(false, true, n, total, hd, q, c, k, c, w, total, parallel: false);
                for (int i = 0; i < n; i++)
                {
                    int visible = Past + i + 1;
                    var row = new Span<float>(w + (long)i * total, visible);
                    TensorPrimitives.Multiply(row, invSqrt, row);
                    float max = TensorPrimitives.Max(row);
                    TensorPrimitives.Subtract(row, max, row);
                    TensorPrimitives.Exp(row, row);
                    TensorPrimitives.Multiply(row, 1f / TensorPrimitives.Sum(row), row);
                    new Span<float>(w + (long)i * total + visible, total - visible).Clear();
                }
                Gemm.MatMul(false, false, n, hd, total, w, total, v, c, Context + (long)b * n * c + (long)h * hd, c, parallel: false);
            }
        }
    }

    /// <summary>Query rows per causal block: the GEMMs skip the masked triangle at this granularity.</summary>
    private const int CausalBlock = 32;

    private struct AttentionForwardKernel : IRangeKernel
    {
        public AttentionItems Items;
        public float* Context, Weights, DroppedWeights, DropoutMask, Query, Key, Value;
        public int Seq, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int t = Seq, c = Channels, hd = HeadDim;
            float invSqrt = 1f / MathF.Sqrt(hd);
            for (int item = start; item < end; item++)
            {
                var (bh, rank) = Items[item];
                int b = bh / Heads, h = bh % Heads;
                int i0 = Items.LastFirst(rank) * CausalBlock, rowsInBlock = Math.Min(CausalBlock, t - i0), visible = i0 + rowsInBlock;
                long headOffset = (long)b * t * c + (long)h * hd;
                long weightOffset = (long)bh * t * t;
                float* q = Query + headOffset, k = Key + headOffset, v = Value + headOffset;
                float* w = Weights + weightOffset;
                // scores = q·kᵀ for query rows [i0, i1): they only need keys 0 .. i1 − 1 (the rest is masked),
                // which skips almost half of the work.
                Gemm.MatMul(false, true, rowsInBlock, visible, hd, q + (long)i0 * c, c, k, c, w + (long)i0 * t, t, parallel: false);
                for (int i = i0; i < visible; i++)
                {
                    // Row i sees keys 0..i; the rest is masked to −inf, i.e. weight 0 after softmax.
                    var row = new Span<float>(w + (long)i * t, i + 1);
                    TensorPrimitives.Multiply(row, invSqrt, row);
                    float max = TensorPrimitives.Max(row);
                    TensorPrimitives.Subtract(row, max, row);
                    TensorPrimitives.Exp(row, row);
                    float sum = TensorPrimitives.Sum(row);
                    TensorPrimitives.Multiply(row, 1f / sum, row);
                    new Span<float>(w + (long)i * t + i + 1, t - i - 1).Clear();
                }
                float* used = w;
                if (DropoutMask != null)
                {
                    used = DroppedWeights + weightOffset;
                    long rows = (long)i0 * t;
                    int length = rowsInBlock * t;
                    TensorPrimitives.Multiply(new ReadOnlySpan<float>(w + rows, length), new ReadOnlySpan<float>(DropoutMask + weightOffset + rows, length),
                        new Span<float>(used + rows, length));
                }
                // context = weights·v: rows [i0, i1) have zero weight beyond column i1 − 1.
                Gemm.MatMul(false, false, rowsInBlock, hd, visible, used + (long)i0 * t, t, v, c,
                    Context + headOffset + (long)i0 * c, c, parallel: false);
            }
        }
    }

    private struct AttentionBackwardKernel : IRangeKernel
    {
        public AttentionItems Items;
        public BackwardPhase Phase;
        public float* DQuery, DKey, DValue, DWeights, DContext, Weights, DropoutMask, Query, Key, Value;
        public int Seq, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int t = Seq, c = Channels, hd = HeadDim;
            float invSqrt = 1f / MathF.Sqrt(hd);
            for (int item = start; item < end; item++)
            {
                var (bh, rank) = Items[item];
                int b = bh / Heads, h = bh % Heads;
                long headOffset = (long)b * t * c + (long)h * hd;
                long weightOffset = (long)bh * t * t;
                float* w = Weights + weightOffset, dw = DWeights + weightOffset;
                // With dropout, v was multiplied by the dropped weights: rebuilt in the scratch by the first phase.
                float* used = DropoutMask != null ? dw : w;
                float* dctx = DContext + headOffset;
                switch (Phase)
                {
                    case BackwardPhase.RebuildDroppedWeights:
                    {
                        int i0 = rank * CausalBlock, length = Math.Min(CausalBlock, t - i0) * t;
                        long rows = (long)i0 * t;
                        TensorPrimitives.Multiply(new ReadOnlySpan<float>(w + rows, length), new ReadOnlySpan<float>(DropoutMask + weightOffset + rows, length),
                            new Span<float>(used + rows, length));
                        break;
                    }
                    case BackwardPhase.ValueGradient:
                    {
                        // context = used·v: dValue rows [j0, j1) = used[:, j0..j1)ᵀ·dContext over the query rows i ≥ j0 only.
                        // The first key blocks sum over the most rows: they come first.
                        int j0 = rank * CausalBlock, rowsInBlock = Math.Min(CausalBlock, t - j0);
                        Gemm.MatMul(true, false, rowsInBlock, hd, t - j0, used + (long)j0 * t + j0, t, dctx + (long)j0 * c, c,
                            DValue + headOffset + (long)j0 * c, c, parallel: false);
                        break;
                    }
                    case BackwardPhase.ScoreGradient:
                    {
                        // d(used) = dContext·vᵀ over the causal part (rows [i0, i1) up to column i1 − 1), overwriting used,
                        // then back through the dropout and the softmax, row by row.
                        int i0 = Items.LastFirst(rank) * CausalBlock, rowsInBlock = Math.Min(CausalBlock, t - i0), visible = i0 + rowsInBlock;
                        Gemm.MatMul(false, true, rowsInBlock, visible, hd, dctx + (long)i0 * c, c, Value + headOffset, c, dw + (long)i0 * t, t, parallel: false);
                        for (int i = i0; i < visible; i++)
                        {
                            var wRow = new ReadOnlySpan<float>(w + (long)i * t, i + 1);
                            var dRow = new Span<float>(dw + (long)i * t, i + 1);
                            if (DropoutMask != null)
                                TensorPrimitives.Multiply(dRow, new ReadOnlySpan<float>(DropoutMask + weightOffset + (long)i * t, i + 1), dRow);
                            float dot = TensorPrimitives.Dot(wRow, dRow);
                            TensorPrimitives.Subtract(dRow, dot, dRow);
                            TensorPrimitives.Multiply(dRow, wRow, dRow);
                            TensorPrimitives.Multiply(dRow, invSqrt, dRow);
                            new Span<float>(dw + (long)i * t + i + 1, t - i - 1).Clear();
                        }
                        break;
                    }
                    case BackwardPhase.QueryKeyGradients:
                    {
                        // scores = q·kᵀ: dQuery rows of block r = dScores·k (up to its last visible key), dKey rows of
                        // block r = dScores[:, block]ᵀ·q over the query rows at or after it: about the same work per block.
                        int i0 = rank * CausalBlock, rowsInBlock = Math.Min(CausalBlock, t - i0), visible = i0 + rowsInBlock;
                        Gemm.MatMul(false, false, rowsInBlock, hd, visible, dw + (long)i0 * t, t, Key + headOffset, c,
                            DQuery + headOffset + (long)i0 * c, c, parallel: false);
                        Gemm.MatMul(true, false, rowsInBlock, hd, t - i0, dw + (long)i0 * t + i0, t, Query + headOffset + (long)i0 * c, c,
                            DKey + headOffset + (long)i0 * c, c, parallel: false);
                        break;
                    }
                }
            }
        }
    }
}
