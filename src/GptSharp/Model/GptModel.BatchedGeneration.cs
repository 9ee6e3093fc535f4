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
    // The head's rows of a batched prefill (at most the direct GEMM's row limit at a time).
    private Tensor? _prefillHeadLogits;

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

    /// <summary>
    /// Prefills several sequences at once: clears each <paramref name="caches"/>[i] (a batch-1 cache), runs
    /// <paramref name="prompts"/>[i] through the model into it, and writes the logits that predict each sequence's next
    /// token to row i of <paramref name="logits"/> [≥ caches.Count, vocab]. Prompts longer than the direct GEMM's row
    /// limit are run together, their rows side by side in one forward per group of at most a context length of rows
    /// (the packed GEMM reads each weight once per group instead of once per prompt, and it forms every row's sums
    /// the same whatever rows share the call); each attends only to its own cache. Shorter prompts, which alone take
    /// the direct GEMM, are prefilled one by one as alone. Row i equals what <see cref="Prefill(KvCache, ReadOnlySpan{int})"/>
    /// on cache i alone gives, bit for bit.
    /// </summary>
    public void PrefillSequences(IReadOnlyList<KvCache> caches, IReadOnlyList<int[]> prompts, Tensor logits)
    {
        int count = caches.Count, c = Config.EmbeddingDim, vocab = Config.VocabSize;
        if (prompts.Count != count) throw new ArgumentException($"PrefillSequences needs one prompt per cache ({count}), got {prompts.Count}.");
        if (logits.Length < (long)count * vocab) throw new ArgumentException($"The logits buffer holds {logits.Length} floats, fewer than {count} × {vocab}.");
        for (int i = 0; i < count; i++)
        {
            CheckCache(caches[i]);
            if (caches[i].BatchSize != 1) throw new ArgumentException("PrefillSequences takes one-row KV caches (one per sequence).");
            int n = prompts[i].Length;
            if (n == 0) throw new ArgumentException("PrefillSequences needs at least one token per prompt.");
            if (n > caches[i].Capacity) throw new ArgumentException($"A prompt of {n} tokens does not fit its KV cache ({caches[i].Capacity} positions).");
            foreach (int id in prompts[i])
                if ((uint)id >= (uint)vocab) throw new ArgumentException($"Token id {id} is outside the model's vocabulary (0..{vocab - 1}).");
        }
        var group = new List<int>();
        int groupRows = 0;
        for (int i = 0; i <= count; i++)
        {
            int n = i < count ? prompts[i].Length : 0;
            if (i == count || groupRows + n > Config.ContextLength)
            {
                if (group.Count > 0) PrefillGroup(caches, prompts, group, logits);
                group.Clear();
                groupRows = 0;
            }
            if (i == count) break;
            if (n <= Gemm.SkinnyRows)
            {
                // Alone this prompt takes the direct GEMM, whose rows depend on nothing else either, but which reads the
                // weights once per call of at most a few rows: prefill it as alone.
                var one = Prefill(caches[i], prompts[i]);
                one.Span[..vocab].CopyTo(logits.Span.Slice(i * vocab, vocab));
                continue;
            }
            group.Add(i);
            groupRows += n;
        }
    }

    /// <summary>One forward over the prompts <paramref name="members"/> (each longer than the direct GEMM's limit), rows side by side.</summary>
    private void PrefillGroup(IReadOnlyList<KvCache> caches, IReadOnlyList<int[]> prompts, List<int> members, Tensor logits)
    {
        int c = Config.EmbeddingDim, vocab = Config.VocabSize;
        var offsets = new int[members.Count + 1];
        for (int g = 0; g < members.Count; g++) offsets[g + 1] = offsets[g] + prompts[members[g]].Length;
        int rows = offsets[^1];
        var head = _prefillHeadLogits ??= new Tensor(Gemm.SkinnyRows, vocab);
        // The prefill set as one prompt of `rows` tokens (at most a context length: the caller's groups) would size it.
        var acts = _inferenceActivations = Ensure(_inferenceActivations, 1, rows, false);
        float* x = acts.Residual[0].Data;
        for (int g = 0; g < members.Count; g++)
        {
            var cache = caches[members[g]];
            cache.Clear();
            fixed (int* ids = prompts[members[g]])
                Kernels.EmbeddingForward(x + (long)offsets[g] * c, ids, TokenEmbedding.Value.Data, PositionEmbedding.Value.Data, 1, offsets[g + 1] - offsets[g], c);
        }
        var attention = new PromptsAttention { Caches = caches, Members = members, Offsets = offsets };
        RunBlocks(acts, rows, dropout: false, ref attention);
        // Each prompt's last position, through the final norm and the head exactly as a prefill alone does it: the direct
        // GEMM's rows are its one-row sums, so the head runs over at most its row limit at a time.
        long bytes = (long)c * sizeof(float);
        for (int g = 0; g < members.Count; g++)
        {
            var cache = caches[members[g]];
            float* last = cache.LastHidden.Data;
            Buffer.MemoryCopy(x + (long)(offsets[g + 1] - 1) * c, last, bytes, bytes);
            Kernels.LayerNormForward(last, null, null, last, FinalNorm.Scale.Value.Data, FinalNorm.Shift.Value.Data, 1, c);
        }
        float* hidden = acts.FinalNorm.Data;
        for (int g0 = 0; g0 < members.Count; g0 += Gemm.SkinnyRows)
        {
            int m = Math.Min(Gemm.SkinnyRows, members.Count - g0);
            for (int g = 0; g < m; g++)
                Buffer.MemoryCopy(caches[members[g0 + g]].LastHidden.Data, hidden + (long)g * c, bytes, bytes);
            Linear(head.Data, hidden, OutHead, null, m, c, vocab);
            for (int g = 0; g < m; g++)
                head.Span.Slice(g * vocab, vocab).CopyTo(logits.Span.Slice(members[g0 + g] * vocab, vocab));
        }
        for (int g = 0; g < members.Count; g++) caches[members[g]].Length = offsets[g + 1] - offsets[g];
    }

    /// <summary>Several prompts' rows side by side, each attending causally to its own (empty before) cache.</summary>
    private struct PromptsAttention : IBlockAttention
    {
        public IReadOnlyList<KvCache> Caches;
        public List<int> Members;
        public int[] Offsets;

        public readonly void Run(int layer, float* q, float* k, float* v, float* ctx, int c, int heads)
        {
            for (int g = 0; g < Members.Count; g++)
            {
                var cache = Caches[Members[g]];
                int n = Offsets[g + 1] - Offsets[g];
                long at = (long)Offsets[g] * c, bytes = (long)n * c * sizeof(float);
                float* keyCache = cache.Keys[layer].Data, valueCache = cache.Values[layer].Data;
                Buffer.MemoryCopy(k + at, keyCache, bytes, bytes);
                Buffer.MemoryCopy(v + at, valueCache, bytes, bytes);
                Kernels.AttentionForwardCached(ctx + at, q + at, keyCache, valueCache, 1, n, 0, cache.Capacity, c, heads);
            }
        }
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
