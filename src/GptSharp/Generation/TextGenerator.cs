using System.Runtime.CompilerServices;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Generation;

/// <summary>Why a generation ended.</summary>
public enum StopReason
{
    /// <summary><c>maxNewTokens</c> were generated.</summary>
    MaxNewTokens,
    /// <summary>Every row produced the end-of-sequence id.</summary>
    EndOfSequence,
    /// <summary>The sequence reached the context length and sliding was turned off.</summary>
    ContextFull,
}

/// <summary>Called with each token as soon as it is picked: the batch row and the token id.</summary>
public delegate void TokenCallback(int row, int token);

/// <summary>
/// Text generation beyond the book's <c>generate</c>: the same loop (crop to the context, pick the next token
/// from the last position's logits, append) with composable logits processors, a KV cache, streaming and
/// beam search. With the default options and <see cref="GenerationOptions.UseCache"/> off it is the book's loop.
/// </summary>
/// <remarks>
/// Batches: every row of the prompt batch has the same length (a <see cref="TokenBatch"/>). With an
/// end-of-sequence id, each row stops on its own: a finished row is padded with the EOS id while the other rows
/// go on, and the step at which the last row finishes is not appended (the book's <c>break</c>), so a batch of
/// one never contains the EOS id, exactly as in the book.
/// The model runs in eval mode under <see cref="GptModel.NoGrad"/> (no dropout, no activations kept); the KV cache
/// path never uses dropout, and the uncached path restores a training-mode model after each forward pass.
/// </remarks>
public sealed partial class TextGenerator : IDisposable
{
    private readonly GptModel _model;
    private readonly LogitsPipeline _pipeline;
    private readonly IRandomGenerator? _random;
    private readonly int _vocabSize;
    private readonly float[] _logits, _probabilities;
    private KvCache? _cache;
    private readonly KvCacheRows _cacheRows = new();

    public TextGenerator(GptModel model, GenerationOptions? options = null, IRandomGenerator? generator = null)
    {
        _model = model;
        Options = (options ?? new GenerationOptions()).Validate();
        ContextSize = Options.ContextSize ?? model.Config.ContextLength;
        if (ContextSize > model.Config.ContextLength)
            throw new ArgumentException($"the context size ({ContextSize}) exceeds the model's context length ({model.Config.ContextLength}).");
        if (Options.Temperature > 0 && generator is null)
            throw new ArgumentException("sampling with a temperature > 0 needs a random generator (a seed).");
        if (Options.EosId is { } eos && eos >= model.Config.VocabSize)
            throw new ArgumentException($"GenerationOptions.EosId {eos} is outside the vocabulary (0..{model.Config.VocabSize - 1}).");
        foreach (int id in Options.LogitBias?.Keys ?? [])
            if (id >= model.Config.VocabSize) throw new ArgumentException($"logit bias: token id {id} is outside the vocabulary (0..{model.Config.VocabSize - 1}).");
        _random = generator;
        _pipeline = Options.CreatePipeline();
        _vocabSize = model.Config.VocabSize;
        _logits = new float[_vocabSize];
        _probabilities = new float[_vocabSize];
    }

    public GenerationOptions Options { get; }

    /// <summary>The window the model sees (the book's <c>context_size</c>).</summary>
    public int ContextSize { get; }

    /// <summary>Why the last call ended.</summary>
    public StopReason LastStopReason { get; private set; }

    /// <summary>
    /// Generates up to <paramref name="maxNewTokens"/> tokens after each row of <paramref name="prompt"/> and
    /// returns prompt + new tokens, calling <paramref name="onToken"/> for every token as it is picked
    /// (EOS and padding are not reported). Beam search (NumBeams &gt; 1) returns the best beam of a one-row prompt.
    /// </summary>
    public TokenBatch Generate(TokenBatch prompt, int maxNewTokens, TokenCallback? onToken = null)
    {
        if (Options.NumBeams > 1)
        {
            if (prompt.BatchSize != 1) throw new ArgumentException("beam search takes one prompt at a time (batch size 1).");
            var best = BeamSearch(prompt.Row(0).ToArray(), maxNewTokens);
            if (onToken is not null)
                for (int i = prompt.SequenceLength; i < best.Length; i++) onToken(0, best[i]);
            return TokenBatch.FromSequence(best);
        }
        var state = Start(prompt, maxNewTokens);
        while (Advance(state, onToken)) { }
        return state.ToBatch();
    }

    /// <summary>The new tokens of a one-row prompt, each yielded as soon as it is picked.</summary>
    public IEnumerable<int> Stream(IReadOnlyList<int> prompt, int maxNewTokens)
    {
        if (Options.NumBeams > 1)
        {
            // Beam search only knows its winner at the end.
            var best = BeamSearch(prompt.ToArray(), maxNewTokens);
            for (int i = prompt.Count; i < best.Length; i++) yield return best[i];
            yield break;
        }
        var state = Start(TokenBatch.FromSequence(prompt.ToArray()), maxNewTokens);
        int emitted = state.Length;
        while (Advance(state, null))
        {
            if (!state.Finished[0]) yield return state.Tokens[emitted];
            emitted = state.Length;
        }
    }

    /// <summary><see cref="Stream"/> as an async sequence: the model runs on a worker thread between tokens.</summary>
    public async IAsyncEnumerable<int> StreamAsync(IReadOnlyList<int> prompt, int maxNewTokens,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var tokens = Stream(prompt, maxNewTokens).GetEnumerator();
        while (await Task.Run(tokens.MoveNext, cancellationToken).ConfigureAwait(false))
            yield return tokens.Current;
    }

    /// <summary>Rows of the batch as the loop grows them: capacity for the prompt and every new token.</summary>
    private sealed class State(int batchSize, int promptLength, int capacity)
    {
        public readonly int BatchSize = batchSize;
        public readonly int PromptLength = promptLength;
        public readonly int Capacity = capacity;
        public readonly int[] Tokens = new int[batchSize * capacity];
        public readonly bool[] Finished = new bool[batchSize];
        public readonly int[] Next = new int[batchSize];
        public int Length = promptLength;
        public int NewTokens;
        public int MaxNewTokens;

        public ReadOnlySpan<int> Row(int b) => Tokens.AsSpan(b * Capacity, Length);

        public TokenBatch ToBatch()
        {
            var ids = new int[BatchSize * Length];
            for (int b = 0; b < BatchSize; b++) Row(b).CopyTo(ids.AsSpan(b * Length));
            return new TokenBatch(ids, BatchSize, Length);
        }
    }

    private State Start(TokenBatch prompt, int maxNewTokens)
    {
        if (maxNewTokens < 0) throw new ArgumentException($"maxNewTokens must be ≥ 0, got {maxNewTokens}.");
        if (!Options.Slide && prompt.SequenceLength > ContextSize)
            throw new ArgumentException($"the prompt has {prompt.SequenceLength} tokens, more than the context length {ContextSize} (and sliding is off).");
        foreach (int id in prompt.Ids)
            if ((uint)id >= (uint)_vocabSize) throw new ArgumentException($"token id {id} is outside the vocabulary (0..{_vocabSize - 1}).");
        var state = new State(prompt.BatchSize, prompt.SequenceLength, prompt.SequenceLength + maxNewTokens) { MaxNewTokens = maxNewTokens };
        for (int b = 0; b < prompt.BatchSize; b++) prompt.Row(b).CopyTo(state.Tokens.AsSpan(b * state.Capacity));
        if (Options.UseCache) PrepareCache(prompt.BatchSize);
        _cacheValid = false;
        LastStopReason = StopReason.MaxNewTokens;
        return state;
    }

    /// <summary>A cache for this batch size (kept between calls: the REPL and repeated calls reuse it).</summary>
    private void PrepareCache(int batchSize)
    {
        if (_cache is not null && _cache.BatchSize == batchSize) return;
        _cache?.Dispose();
        _cache = new KvCache(_model, batchSize, ContextSize);
    }

    /// <summary>One step of the loop for every row: returns false (and appends nothing) when generation is over.</summary>
    private bool Advance(State s, TokenCallback? onToken)
    {
        if (s.NewTokens >= s.MaxNewTokens) { LastStopReason = StopReason.MaxNewTokens; return false; }
        if (!Options.Slide && s.Length >= ContextSize) { LastStopReason = StopReason.ContextFull; return false; }

        RunModel(s);
        bool allFinished = true;
        for (int b = 0; b < s.BatchSize; b++)
        {
            if (s.Finished[b]) { s.Next[b] = Options.EosId!.Value; continue; }
            int next = PickToken(s.Row(b), s.PromptLength, LogitsRow(b));
            s.Next[b] = next;
            if (next == Options.EosId) s.Finished[b] = true;
            else allFinished = false;
        }
        if (allFinished && Options.EosId is not null) { LastStopReason = StopReason.EndOfSequence; return false; }

        for (int b = 0; b < s.BatchSize; b++)
        {
            s.Tokens[b * s.Capacity + s.Length] = s.Next[b];
            if (!s.Finished[b]) onToken?.Invoke(b, s.Next[b]);
        }
        s.Length++;
        s.NewTokens++;
        return true;
    }

    /// <summary>Applies the processors to a copy of one row's logits and picks the token: argmax, or one multinomial draw.</summary>
    private int PickToken(ReadOnlySpan<int> row, int promptLength, ReadOnlySpan<float> rowLogits)
    {
        var logits = _logits.AsSpan();
        rowLogits.CopyTo(logits);
        _pipeline.Process(row, promptLength, logits);
        if (Options.Temperature > 0)
        {
            Sampling.Softmax(logits, _probabilities);
            return _random!.Multinomial(_probabilities);
        }
        return Sampling.Argmax(logits);
    }

    // Where the last position's logits of each row are after RunModel.
    private Tensor? _uncachedLogits;
    private int _uncachedWindow;

    /// <summary>
    /// Computes the next-token logits of every row for the last <see cref="ContextSize"/> tokens (the book's
    /// <c>idx[:, -context_size:]</c>): through the KV cache — prefill on the first step or when the window slides,
    /// one position per step otherwise — or the book's full pass.
    /// </summary>
    private void RunModel(State s) => RunModel(s.Tokens, s.Capacity, s.BatchSize, s.Length);

    private void RunModel(int[] tokens, int rowStride, int batchSize, int length)
    {
        int window = Math.Min(length, ContextSize);
        if (Options.UseCache)
        {
            var cache = _cache!;
            bool continues = _cacheValid && cache.Length == length - 1 && cache.Length > 0 && cache.Length < cache.Capacity;
            if (continues)
            {
                Span<int> last = batchSize <= 64 ? stackalloc int[batchSize] : new int[batchSize];
                for (int b = 0; b < batchSize; b++) last[b] = tokens[b * rowStride + length - 1];
                _cachedLogits = _model.DecodeNext(cache, last);
            }
            else
            {
                // First step, or the window slid past the context: (re-)prefill the last `window` tokens.
                _windowBatch = WindowBatch(tokens, rowStride, batchSize, length, window);
                _cachedLogits = _model.Prefill(cache, _windowBatch);
            }
            _cacheValid = true;
            return;
        }
        var batch = WindowBatch(tokens, rowStride, batchSize, length, window);
        bool wasTraining = _model.IsTraining;
        _model.Eval();
        try
        {
            using (_model.NoGrad())
                _uncachedLogits = _model.Forward(batch);
        }
        finally
        {
            if (wasTraining) _model.Train();
        }
        _uncachedWindow = window;
    }

    // False when the cache content does not belong to the sequences being generated (a new call started).
    private bool _cacheValid;

    private TokenBatch? _windowBatch;
    private Tensor? _cachedLogits;

    /// <summary>The last <paramref name="window"/> tokens of each row (the book's <c>idx[:, -context_size:]</c>).</summary>
    private TokenBatch WindowBatch(int[] tokens, int rowStride, int batchSize, int length, int window)
    {
        // The book's loop builds a fresh tensor each step; once the window slides, the cached path re-prefills a
        // window of the same shape for every token, so it reuses the last one's buffer.
        var batch = _windowBatch is { } previous && previous.BatchSize == batchSize && previous.SequenceLength == window
            ? previous
            : new TokenBatch(new int[batchSize * window], batchSize, window);
        for (int b = 0; b < batchSize; b++)
            tokens.AsSpan(b * rowStride + length - window, window).CopyTo(batch.Ids.AsSpan(b * window));
        return batch;
    }

    private unsafe ReadOnlySpan<float> LogitsRow(int row)
    {
        if (Options.UseCache) return new ReadOnlySpan<float>(_cachedLogits!.Data + (long)row * _vocabSize, _vocabSize);
        long offset = ((long)row * _uncachedWindow + _uncachedWindow - 1) * _vocabSize;
        return new ReadOnlySpan<float>(_uncachedLogits!.Data + offset, _vocabSize);
    }

    public void Dispose()
    {
        _cache?.Dispose();
        _cache = null;
        _cacheRows.Dispose();
    }
}
