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
    /// Heads run in parallel; the GEMMs inside run single-threaded.
    /// </summary>
    public static void AttentionForward(float* context, float* weights, float* droppedWeights, float* dropoutMask,
        float* query, float* key, float* value, int batch, int seq, int channels, int heads)
    {
        int headDim = channels / heads;
        RowParallel.For(batch * heads, 2L * seq * seq * headDim, new AttentionForwardKernel
        {
            Context = context, Weights = weights, DroppedWeights = dropoutMask != null ? droppedWeights : weights,
            DropoutMask = dropoutMask, Query = query, Key = key, Value = value,
            Seq = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

    /// <summary>
    /// Backward of <see cref="AttentionForward"/>: from dContext [batch, seq, channels] to dQuery, dKey, dValue
    /// (overwritten). <paramref name="dWeights"/> [batch, heads, seq, seq] is scratch.
    /// Softmax backward: dScore_ij = w_ij·(dW_ij − Σ_k w_ik·dW_ik), times the 1/√headDim scale.
    /// </summary>
    public static void AttentionBackward(float* dQuery, float* dKey, float* dValue, float* dWeights, float* dContext,
        float* weights, float* droppedWeights, float* dropoutMask, float* query, float* key, float* value,
        int batch, int seq, int channels, int heads)
    {
        int headDim = channels / heads;
        RowParallel.For(batch * heads, 4L * seq * seq * headDim, new AttentionBackwardKernel
        {
            DQuery = dQuery, DKey = dKey, DValue = dValue, DWeights = dWeights, DContext = dContext,
            Weights = weights, DroppedWeights = dropoutMask != null ? droppedWeights : weights, DropoutMask = dropoutMask,
            Query = query, Key = key, Value = value,
            Seq = seq, Channels = channels, Heads = heads, HeadDim = headDim,
        });
    }

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

    private struct AttentionForwardKernel : IRangeKernel
    {
        public float* Context, Weights, DroppedWeights, DropoutMask, Query, Key, Value;
        public int Seq, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int t = Seq, c = Channels, hd = HeadDim;
            float invSqrt = 1f / MathF.Sqrt(hd);
            for (int bh = start; bh < end; bh++)
            {
                int b = bh / Heads, h = bh % Heads;
                long headOffset = (long)b * t * c + (long)h * hd;
                long weightOffset = (long)bh * t * t;
                float* q = Query + headOffset, k = Key + headOffset, v = Value + headOffset;
                float* w = Weights + weightOffset;
                Gemm.MatMul(false, true, t, t, hd, q, c, k, c, w, t, parallel: false);
                for (int i = 0; i < t; i++)
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
                    TensorPrimitives.Multiply(new ReadOnlySpan<float>(w, t * t), new ReadOnlySpan<float>(DropoutMask + weightOffset, t * t),
                        new Span<float>(used, t * t));
                }
                Gemm.MatMul(false, false, t, hd, t, used, t, v, c, Context + headOffset, c, parallel: false);
            }
        }
    }

    private struct AttentionBackwardKernel : IRangeKernel
    {
        public float* DQuery, DKey, DValue, DWeights, DContext, Weights, DroppedWeights, DropoutMask, Query, Key, Value;
        public int Seq, Channels, Heads, HeadDim;

        public readonly void Execute(int start, int end)
        {
            int t = Seq, c = Channels, hd = HeadDim;
            float invSqrt = 1f / MathF.Sqrt(hd);
            for (int bh = start; bh < end; bh++)
            {
                int b = bh / Heads, h = bh % Heads;
                long headOffset = (long)b * t * c + (long)h * hd;
                long weightOffset = (long)bh * t * t;
                float* w = Weights + weightOffset, dw = DWeights + weightOffset, used = DroppedWeights + weightOffset;
                float* dctx = DContext + headOffset;
                // context = used·v: d(used) = dContext·vᵀ, dValue = usedᵀ·dContext.
                Gemm.MatMul(false, true, t, t, hd, dctx, c, Value + headOffset, c, dw, t, parallel: false);
                Gemm.MatMul(true, false, t, hd, t, used, t, dctx, c, DValue + headOffset, c, parallel: false);
                if (DropoutMask != null)
                {
                    var dws = new Span<float>(dw, t * t);
                    TensorPrimitives.Multiply(dws, new ReadOnlySpan<float>(DropoutMask + weightOffset, t * t), dws);
                }
                for (int i = 0; i < t; i++)
                {
                    var wRow = new ReadOnlySpan<float>(w + (long)i * t, i + 1);
                    var dRow = new Span<float>(dw + (long)i * t, i + 1);
                    float dot = TensorPrimitives.Dot(wRow, dRow);
                    TensorPrimitives.Subtract(dRow, dot, dRow);
                    TensorPrimitives.Multiply(dRow, wRow, dRow);
                    TensorPrimitives.Multiply(dRow, invSqrt, dRow);
                    new Span<float>(dw + (long)i * t + i + 1, t - i - 1).Clear();
                }
                // scores = q·kᵀ: dQuery = dScores·k, dKey = dScoresᵀ·q.
                Gemm.MatMul(false, false, t, hd, t, dw, t, Key + headOffset, c, DQuery + headOffset, c, parallel: false);
                Gemm.MatMul(true, false, t, hd, t, dw, t, Query + headOffset, c, DKey + headOffset, c, parallel: false);
            }
        }
    }
}
