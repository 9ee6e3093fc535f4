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
    /// cache i alone gives: bit for bit up to 32 sequences (8 on an int8 model: the GEMM forms each row's sums as it does
    /// for one row, the kernel <c>generate</c> uses), up to the summation order of the packed GEMM beyond.
    /// </summary>
    public void DecodeNextSequences(IReadOnlyList<KvCache> caches, ReadOnlySpan<int> nextIds, Tensor logits)
    {
        if (nextIds.Length != caches.Count) throw new ArgumentException($"DecodeNextSequences needs one id per sequence ({caches.Count}), got {nextIds.Length}.");
        for (int i = 0; i < caches.Count; i++)
            if (caches[i].Length == 0) throw new ArgumentException("DecodeNextSequences continues prefilled sequences; this KV cache is empty.");
        if (_oneTokenEach.Length < caches.Count) _oneTokenEach = Enumerable.Repeat(1, caches.Count).ToArray();
        ExtendSequences(caches, _oneTokenEach.AsSpan(0, caches.Count), nextIds, logits);
    }

    /// <summary>
    /// The most new tokens one <see cref="ExtendSequences"/> step holds with every row computed exactly as alone: the
    /// direct float32 GEMM's rows (<see cref="Gemm.RowExactRows"/>), or the int8 decode kernel's on an int8 model.
    /// </summary>
    internal int ExactStepRows => IsQuantized ? Int8Kernels.Int8DecodeRows : Gemm.RowExactRows;

    /// <summary>
    /// Which kernels compute a sequence's positions when <paramref name="rows"/> of them go through one forward (a
    /// prompt riding in a step or prefilled alone, or one decoded token): attention scores by dot products below
    /// 8 rows (<see cref="Kernels.CachedAttentionTiles"/>), by transposed tiles from there; the linear layers by the row-exact
    /// kernel up to <see cref="ExactStepRows"/> rows, the packed GEMM beyond. Each of these forms a row the same way
    /// wherever its chunk starts (key tiles sit at absolute positions), so positions of one kind come out bit for bit
    /// alike: what lets the scheduler's <c>PromptCache</c> hand a new prompt positions an earlier sequence computed.
    /// </summary>
    internal int PositionKind(int rows) => (Kernels.CachedAttentionTiles(rows) ? 1 : 0) | (rows > ExactStepRows ? 2 : 0);

    private int[] _oneTokenEach = [];
    // The step's token counts, kept for PerSequenceAttention (a struct field cannot hold the caller's span).
    private int[] _sequenceRows = [], _sequenceKernelRows = [];

    /// <summary>
    /// One forward over several sequences at once, each taking its own number of new tokens: sequence i appends
    /// <paramref name="tokenCounts"/>[i] ids (the next ones of <paramref name="ids"/>, in sequence order) to its batch-1
    /// cache at the cache's own length, so one step can decode one token for some sequences and read a whole prompt
    /// (an empty cache) for others, every linear layer reading the weights once for all of them. Row i of
    /// <paramref name="logits"/> gets the logits after sequence i's last new token. Up to <see cref="ExactStepRows"/>
    /// tokens in all, each sequence's logits and cache equal, bit for bit, those of <see cref="Prefill(KvCache, ReadOnlySpan{int})"/>
    /// or <see cref="DecodeNext(KvCache, int)"/> on that sequence alone: the GEMM forms every row as it forms a row
    /// alone, and attention runs per sequence.
    /// </summary>
    /// <param name="kernelRows">Per sequence, the rows that pick its attention kernel (default: its token count): a prompt's
    /// rest after reused positions passes the whole prompt's length (<see cref="Kernels.AttentionForwardCached"/>).</param>
    internal void ExtendSequences(IReadOnlyList<KvCache> caches, ReadOnlySpan<int> tokenCounts, ReadOnlySpan<int> ids, Tensor logits,
        ReadOnlySpan<int> kernelRows = default)
    {
        int sequences = caches.Count, c = Config.EmbeddingDim, vocab = Config.VocabSize;
        if (sequences == 0) return;
        if (tokenCounts.Length != sequences) throw new ArgumentException($"One token count per sequence ({sequences}) is needed, got {tokenCounts.Length}.");
        if (logits.Length < (long)sequences * vocab) throw new ArgumentException($"The logits buffer holds {logits.Length} floats, fewer than {sequences} × {vocab}.");
        int rows = 0;
        for (int i = 0; i < sequences; i++)
        {
            var cache = caches[i];
            CheckCache(cache);
            if (cache.BatchSize != 1) throw new ArgumentException("A batched step takes one-row KV caches (one per sequence).");
            if (tokenCounts[i] < 1) throw new ArgumentException($"Sequence {i} of the step has {tokenCounts[i]} new tokens; each needs at least one.");
            if (cache.Length + tokenCounts[i] > cache.Capacity)
                throw new ArgumentException($"A KV cache holds {cache.Length} of {cache.Capacity} positions and cannot take {tokenCounts[i]} more.");
            rows += tokenCounts[i];
        }
        if (ids.Length != rows) throw new ArgumentException($"The step has {rows} new tokens but {ids.Length} ids.");
        foreach (int id in ids)
            if ((uint)id >= (uint)vocab) throw new ArgumentException($"Token id {id} is outside the model's vocabulary (0..{vocab - 1}).");
        if (!kernelRows.IsEmpty && kernelRows.Length != sequences) throw new ArgumentException($"One kernel row count per sequence ({sequences}) is needed, got {kernelRows.Length}.");
        if (_sequenceRows.Length < sequences) (_sequenceRows, _sequenceKernelRows) = (new int[sequences], new int[sequences]);
        tokenCounts.CopyTo(_sequenceRows);
        (kernelRows.IsEmpty ? tokenCounts : kernelRows).CopyTo(_sequenceKernelRows);

        var acts = _sequenceStepActivations = Ensure(_sequenceStepActivations, rows, 1, false);
        float* x = acts.Residual[0].Data;
        fixed (int* p = ids)
            for (int i = 0, row = 0; i < sequences; row += tokenCounts[i], i++)
                Kernels.EmbeddingForward(x + (long)row * c, p + row, TokenEmbedding.Value.Data, PositionEmbedding.Value.Data + (long)caches[i].Length * c, 1, tokenCounts[i], c);
        var attention = new PerSequenceAttention { Caches = caches, Rows = _sequenceRows, KernelRows = _sequenceKernelRows };
        RunBlocks(acts, rows, dropout: false, rowExact: true, ref attention);
        // Only each sequence's last position predicts its next token: those rows move up to row i (in order, so a row is
        // read before anything is written over it), are normalised in place and projected onto the vocabulary.
        for (int i = 0, row = 0; i < sequences; i++)
        {
            row += tokenCounts[i];
            if (row - 1 != i) Buffer.MemoryCopy(x + (long)(row - 1) * c, x + (long)i * c, (long)c * sizeof(float), (long)c * sizeof(float));
        }
        Kernels.LayerNormForward(x, null, null, x, FinalNorm.Scale.Value.Data, FinalNorm.Shift.Value.Data, sequences, c);
        Linear(logits.Data, x, OutHead, null, sequences, c, vocab, rowExact: true);
        for (int i = 0; i < sequences; i++) caches[i].Length += tokenCounts[i];
    }

    /// <summary>One batch-1 cache per sequence, each at its own length, with <c>Rows</c>[i] new rows: each sequence's
    /// queries see only its own cache (causal within its new rows).</summary>
    private struct PerSequenceAttention : IBlockAttention
    {
        public IReadOnlyList<KvCache> Caches;
        public int[] Rows, KernelRows;

        public readonly void Run(int layer, float* q, float* k, float* v, float* ctx, int c, int heads)
        {
            for (int i = 0, row = 0; i < Caches.Count; row += Rows[i], i++)
            {
                var cache = Caches[i];
                int past = cache.Length, n = Rows[i];
                float* keyCache = cache.Keys[layer].Data, valueCache = cache.Values[layer].Data;
                long bytes = (long)n * c * sizeof(float), offset = (long)row * c;
                Buffer.MemoryCopy(k + offset, keyCache + (long)past * c, bytes, bytes);
                Buffer.MemoryCopy(v + offset, valueCache + (long)past * c, bytes, bytes);
                Kernels.AttentionForwardCached(ctx + offset, q + offset, keyCache, valueCache, 1, n, past, cache.Capacity, c, heads, KernelRows[i]);
            }
        }
    }
}
