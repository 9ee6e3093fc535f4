using GptSharp.Model;

namespace GptSharp.Generation;

/// <summary>
/// The keys and values of sequences that ended, kept so that a later prompt beginning with the same tokens (a shared
/// system prompt, a chat's earlier turns sent again, a client repeating a request) copies them instead of computing
/// them again: llama.cpp's <c>cache_prompt</c>, vLLM's prefix caching. Owned by the <see cref="BatchScheduler"/>'s
/// decoding thread (not thread-safe).
/// </summary>
/// <remarks>
/// A reused position holds exactly what the new prompt's own prefill would have computed, so the cache never changes
/// an output: a prompt of p tokens is computed by the kernels of <see cref="GptModel.PositionKind"/>(p), so it takes
/// only positions computed by the same kernels (an earlier prompt of the same kind; decoded tokens only where a
/// prompt that short is read by the one-token kernels too). Its rest is read with the attention kernel the whole
/// prompt picks (the kernel rows of <see cref="GptModel.ExtendSequences"/>), and a prompt the packed GEMM reads (more
/// than a step's row-exact rows) recomputes more than that many positions, so that its rest goes through the packed
/// GEMM too. <c>BatchSchedulerTests</c> check each kind against a cold prefill, bit for bit.
/// Memory: a kept cache is cut to its reusable positions, which add up to at most <see cref="MaxPositions"/> (the
/// scheduler's default: one context, i.e. one more decoding sequence's KV cache), in at most <see cref="MaxEntries"/>
/// caches (each also holds a row of logits); the least recently used go first.
/// </remarks>
internal sealed class PromptCache(GptModel model, int maxPositions, int maxEntries = 32) : IDisposable
{
    private sealed class Entry
    {
        public required KvCache Cache;
        public required int[] Tokens; // the token at each reusable position
        public required int Kind; // the kernels that computed its prompt positions (GptModel.PositionKind)
        public long LastUsed;
    }

    private readonly List<Entry> _entries = [];
    private readonly int _decodedKind = model.PositionKind(1);
    private long _clock;

    /// <summary>Positions of KV cache held.</summary>
    public int Positions { get; private set; }

    public int MaxPositions { get; } = maxPositions;

    public int MaxEntries { get; } = maxEntries;

    /// <summary>A match for a prompt: the entry and how many of its leading positions the prompt may take.</summary>
    public readonly record struct Match(object? Entry, int Positions);

    /// <summary>The kept positions <paramref name="prompt"/> may reuse (the longest usable common prefix); nothing is copied yet.</summary>
    public Match Find(ReadOnlySpan<int> prompt)
    {
        Entry? best = null;
        int bestLength = 0;
        int kind = model.PositionKind(prompt.Length);
        foreach (var e in _entries)
        {
            if (e.Kind != kind) continue;
            // The prompt's last token is always computed: its logits pick the first new token.
            int common = Math.Min(e.Tokens.Length, prompt.Length - 1);
            int n = 0;
            while (n < common && e.Tokens[n] == prompt[n]) n++;
            // A prompt the packed GEMM reads (beyond a step's row-exact rows) leaves more than that many to compute, so
            // that its rest goes through the packed GEMM too.
            if (prompt.Length > model.ExactStepRows) n = Math.Min(n, prompt.Length - model.ExactStepRows - 1);
            if (n > bestLength) (best, bestLength) = (e, n);
        }
        return new Match(best, bestLength);
    }

    /// <summary>Copies the matched positions into <paramref name="target"/> (an empty one-row cache) and returns how many.</summary>
    public int CopyInto(Match match, KvCache target)
    {
        if (match.Entry is not Entry e || match.Positions == 0) return 0;
        if (target.Length != 0 || target.BatchSize != 1 || target.Model != model)
            throw new ArgumentException("A prompt's reused positions go into an empty one-row KV cache of the same model.");
        int positions = Math.Min(match.Positions, target.Capacity);
        CopyPositions(e.Cache, target, positions);
        e.LastUsed = ++_clock;
        return positions;
    }

    /// <summary>
    /// Takes a sequence's cache when it ends (<paramref name="tokens"/>: the token at each of its cached positions; the
    /// first <paramref name="promptLength"/> were its prompt). Keeps its reusable positions (copied into a cache of their
    /// size where it has room for more) unless there are none, more than the whole budget or a kept entry already covers
    /// them; disposes it. The least recently used entries make room.
    /// </summary>
    public void Keep(KvCache cache, ReadOnlySpan<int> tokens, int promptLength)
    {
        int kind = model.PositionKind(promptLength);
        // Decoded positions were computed one at a time: reusable only by prompts read that way too.
        int useful = kind == _decodedKind ? cache.Length : Math.Min(cache.Length, promptLength);
        if (useful == 0 || useful > MaxPositions || MaxEntries == 0 || cache.BatchSize != 1 || cache.Model != model)
        {
            cache.Dispose();
            return;
        }
        foreach (var e in _entries)
            if (e.Kind == kind && e.Tokens.Length >= useful && tokens[..useful].SequenceEqual(e.Tokens.AsSpan(0, useful)))
            {
                e.LastUsed = ++_clock;
                cache.Dispose();
                return;
            }
        if (cache.Capacity > useful)
        {
            // A sequence's cache is sized for its max_tokens: keep only what a later prompt can take.
            var cut = new KvCache(model, 1, useful);
            CopyPositions(cache, cut, useful);
            cache.Dispose();
            cache = cut;
        }
        while (_entries.Count > 0 && (Positions + useful > MaxPositions || _entries.Count >= MaxEntries)) Evict();
        _entries.Add(new Entry { Cache = cache, Tokens = tokens[..useful].ToArray(), Kind = kind, LastUsed = ++_clock });
        Positions += useful;
    }

    private unsafe void CopyPositions(KvCache from, KvCache to, int positions)
    {
        int floats = checked(positions * model.Config.EmbeddingDim);
        for (int layer = 0; layer < to.Keys.Length; layer++)
        {
            new ReadOnlySpan<float>(from.Keys[layer].Data, floats).CopyTo(new Span<float>(to.Keys[layer].Data, floats));
            new ReadOnlySpan<float>(from.Values[layer].Data, floats).CopyTo(new Span<float>(to.Values[layer].Data, floats));
        }
        to.Length = positions;
    }

    private void Evict()
    {
        int oldest = 0;
        for (int i = 1; i < _entries.Count; i++)
            if (_entries[i].LastUsed < _entries[oldest].LastUsed) oldest = i;
        var e = _entries[oldest];
        _entries.RemoveAt(oldest);
        Positions -= e.Tokens.Length;
        e.Cache.Dispose();
    }

    public void Dispose()
    {
        foreach (var e in _entries) e.Cache.Dispose();
        _entries.Clear();
        Positions = 0;
    }
}
