using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Data;

namespace GptSharp.Model;

/// <summary>Incremental inference over a <see cref="KvCache"/>: the same layers as <see cref="Forward"/>, for new positions only.</summary>
public sealed unsafe partial class GptModel
{
    /// <summary>
    /// Clears <paramref name="cache"/>, runs the prompt <paramref name="ids"/> [batch, seq] through the model and
    /// caches its keys and values. Returns the last position's logits [batch, vocab] (owned by the cache).
    /// </summary>
    public Tensor Prefill(KvCache cache, TokenBatch ids)
    {
        CheckCache(cache);
        if (ids.BatchSize != cache.BatchSize)
            throw new ArgumentException($"The prompt has {ids.BatchSize} rows but the KV cache was made for {cache.BatchSize}.");
        cache.Clear();
        return Extend(cache, ids.Ids, ids.SequenceLength);
    }

    /// <summary>Prefill for a single sequence (batch 1).</summary>
    public Tensor Prefill(KvCache cache, ReadOnlySpan<int> ids) => Prefill(cache, TokenBatch.FromSequence(ids));

    /// <summary>
    /// The rest of a prompt whose first <see cref="KvCache.Length"/> positions are already in the one-row
    /// <paramref name="cache"/> (copied from an earlier sequence by the scheduler's <c>PromptCache</c>): appends
    /// <paramref name="ids"/> as <see cref="Prefill(KvCache, ReadOnlySpan{int})"/> of the whole prompt computes those
    /// positions, and returns the last one's logits.
    /// </summary>
    internal Tensor PrefillRest(KvCache cache, ReadOnlySpan<int> ids)
    {
        CheckCache(cache);
        if (cache.BatchSize != 1) throw new ArgumentException("PrefillRest continues a one-row KV cache.");
        if (ids.Length == 0) throw new ArgumentException("PrefillRest needs at least one token.");
        return Extend(cache, ids.ToArray(), ids.Length, kernelRows: cache.Length + ids.Length);
    }

    /// <summary>
    /// Appends one token per row (<paramref name="nextIds"/>, length = batch) at position <see cref="KvCache.Length"/>
    /// and returns the logits [batch, vocab] that predict the token after it.
    /// </summary>
    public Tensor DecodeNext(KvCache cache, ReadOnlySpan<int> nextIds)
    {
        CheckCache(cache);
        if (nextIds.Length != cache.BatchSize)
            throw new ArgumentException($"DecodeNext needs one id per row ({cache.BatchSize}), got {nextIds.Length}.");
        int[] ids = cache.StepIds ??= new int[cache.BatchSize];
        nextIds.CopyTo(ids);
        return Extend(cache, ids, 1);
    }

    /// <summary>DecodeNext for a single sequence (batch 1).</summary>
    public Tensor DecodeNext(KvCache cache, int nextId)
    {
        Span<int> one = [nextId];
        return DecodeNext(cache, one);
    }

    private void CheckCache(KvCache cache)
    {
        if (!ReferenceEquals(cache.Model, this)) throw new ArgumentException("This KV cache belongs to another model.");
    }

    private Tensor Extend(KvCache cache, int[] ids, int newTokens, int kernelRows = 0)
    {
        int batch = cache.BatchSize, past = cache.Length, vocab = Config.VocabSize;
        if (past + newTokens > cache.Capacity)
            throw new ArgumentException($"The KV cache holds {past} of {cache.Capacity} positions and cannot take {newTokens} more; crop the window and prefill again.");
        foreach (int id in ids)
            if ((uint)id >= (uint)vocab)
                throw new ArgumentException($"Token id {id} is outside the model's vocabulary (0..{vocab - 1}).");
        var acts = _inferenceActivations = Ensure(_inferenceActivations, batch, newTokens, false);
        fixed (int* p = ids) RunCachedForward(acts, cache, p, batch, newTokens, past, kernelRows);
        cache.Length = past + newTokens;
        return cache.Logits;
    }

    private void RunCachedForward(GptActivations a, KvCache cache, int* ids, int batch, int n, int past, int kernelRows)
    {
        int c = Config.EmbeddingDim, vocab = Config.VocabSize;
        int rows = batch * n;
        float* x = a.Residual[0].Data;
        // Token + position embeddings for positions past .. past + n − 1.
        Kernels.EmbeddingForward(x, ids, TokenEmbedding.Value.Data, PositionEmbedding.Value.Data + (long)past * c, batch, n, c);
        var attention = new SharedCacheAttention { Cache = cache, Batch = batch, NewTokens = n, Past = past, KernelRows = kernelRows };
        // Row-exact: a short prompt's rows come out as they do riding in a batched step (ExtendSequences).
        RunBlocks(a, rows, dropout: false, rowExact: true, ref attention);
        // Only the last position of each row is needed to pick the next token.
        float* last = cache.LastHidden.Data;
        for (int b = 0; b < batch; b++)
        {
            long bytes = (long)c * sizeof(float);
            Buffer.MemoryCopy(x + ((long)b * n + n - 1) * c, last + (long)b * c, bytes, bytes);
        }
        Kernels.LayerNormForward(last, null, null, last, FinalNorm.Scale.Value.Data, FinalNorm.Shift.Value.Data, batch, c);
        Linear(cache.Logits.Data, last, OutHead, null, batch, c, vocab, rowExact: true);
    }

    /// <summary>One cache for a batch of rows that share a length: <paramref name="NewTokens"/> positions per row after <c>Past</c>.</summary>
    private struct SharedCacheAttention : IBlockAttention
    {
        public KvCache Cache;
        public int Batch, NewTokens, Past, KernelRows;

        public readonly void Run(int layer, float* q, float* k, float* v, float* ctx, int c, int heads)
        {
            int cap = Cache.Capacity, n = NewTokens;
            float* keyCache = Cache.Keys[layer].Data, valueCache = Cache.Values[layer].Data;
            long bytes = (long)n * c * sizeof(float);
            for (int b = 0; b < Batch; b++)
            {
                Buffer.MemoryCopy(k + (long)b * n * c, keyCache + ((long)b * cap + Past) * c, bytes, bytes);
                Buffer.MemoryCopy(v + (long)b * n * c, valueCache + ((long)b * cap + Past) * c, bytes, bytes);
            }
            Kernels.AttentionForwardCached(ctx, q, keyCache, valueCache, Batch, n, Past, cap, c, heads, KernelRows);
        }
    }
}
