using GptSharp.Tensors;
using GptSharp.Layers;

namespace GptSharp.Model;

/// <summary>
/// One decoding step for several independent sequences at once (continuous batching): each sequence keeps its
/// own one-row <see cref="KvCache"/>, possibly of a different length, and the step runs every linear layer once
/// over all of them, so the weights are read once per step instead of once per sequence.
/// </summary>
public sealed unsafe partial class GptModel
{
    // Separate from the prefill buffers: sized for (sequences, 1), so a long prompt's prefill never makes
    // every batched step carry a (sequences × context)-row set of activations and logits.
    private GptActivations? _sequenceStepActivations;

    /// <summary>
    /// Appends <paramref name="nextIds"/>[i] to <paramref name="caches"/>[i] (each a batch-1 cache, at its own
    /// <see cref="KvCache.Length"/>) and writes the logits that predict each sequence's next token to row i of
    /// <paramref name="logits"/> [≥ caches.Count, vocab]. Row i equals what <see cref="DecodeNext(KvCache, int)"/> on
    /// cache i alone gives: bit for bit up to 8 sequences (the direct GEMM kernel forms each row's sums as it does for
    /// one row, the kernel <c>generate</c> uses), up to the summation order of the packed GEMM beyond.
    /// </summary>
    public void DecodeNextSequences(IReadOnlyList<KvCache> caches, ReadOnlySpan<int> nextIds, Tensor logits)
    {
        int rows = caches.Count, c = Config.EmbeddingDim, vocab = Config.VocabSize;
        if (rows == 0) return;
        if (nextIds.Length != rows) throw new ArgumentException($"DecodeNextSequences needs one id per sequence ({rows}), got {nextIds.Length}.");
        if (logits.Length < (long)rows * vocab) throw new ArgumentException($"The logits buffer holds {logits.Length} floats, fewer than {rows} × {vocab}.");
        for (int i = 0; i < rows; i++)
        {
            var cache = caches[i];
            CheckCache(cache);
            if (cache.BatchSize != 1) throw new ArgumentException("DecodeNextSequences takes one-row KV caches (one per sequence).");
            if (cache.Length == 0) throw new ArgumentException("DecodeNextSequences continues prefilled sequences; this KV cache is empty.");
            if (cache.Length >= cache.Capacity)
                throw new ArgumentException($"A KV cache is full ({cache.Capacity} positions) and cannot take another token.");
            if ((uint)nextIds[i] >= (uint)vocab) throw new ArgumentException($"Token id {nextIds[i]} is outside the model's vocabulary (0..{vocab - 1}).");
        }
        var acts = _sequenceStepActivations = Ensure(_sequenceStepActivations, rows, 1, false);
        float* x = acts.Residual[0].Data;
        for (int i = 0; i < rows; i++)
        {
            int id = nextIds[i];
            Kernels.EmbeddingForward(x + (long)i * c, &id, TokenEmbedding.Value.Data, PositionEmbedding.Value.Data + (long)caches[i].Length * c, 1, 1, c);
        }
        var attention = new PerSequenceAttention { Caches = caches };
        RunBlocks(acts, rows, dropout: false, ref attention);
        // Each row is its sequence's last (only) position: normalise in place and project onto the vocabulary.
        Kernels.LayerNormForward(x, null, null, x, FinalNorm.Scale.Value.Data, FinalNorm.Shift.Value.Data, rows, c);
        Linear(logits.Data, x, OutHead, null, rows, c, vocab);
        for (int i = 0; i < rows; i++) caches[i].Length++;
    }

    /// <summary>One single-row cache per sequence, each at its own length: each query sees only its own cache.</summary>
    private struct PerSequenceAttention : IBlockAttention
    {
        public IReadOnlyList<KvCache> Caches;

        public readonly void Run(int layer, float* q, float* k, float* v, float* ctx, int c, int heads)
        {
            long rowBytes = (long)c * sizeof(float);
            for (int i = 0; i < Caches.Count; i++)
            {
                var cache = Caches[i];
                int past = cache.Length;
                float* keyCache = cache.Keys[layer].Data, valueCache = cache.Values[layer].Data;
                Buffer.MemoryCopy(k + (long)i * c, keyCache + (long)past * c, rowBytes, rowBytes);
                Buffer.MemoryCopy(v + (long)i * c, valueCache + (long)past * c, rowBytes, rowBytes);
                Kernels.AttentionForwardCached(ctx + (long)i * c, q + (long)i * c, keyCache, valueCache, 1, 1, past, cache.Capacity, c, heads);
            }
        }
    }
}
