namespace GptSharp.Generation;

/// <summary>
/// One step of turning a row of next-token logits into the distribution a token is drawn from.
/// Processors are applied in order (<see cref="LogitsPipeline"/>) and change the logits in place;
/// each owns whatever scratch memory it needs, so a call allocates nothing.
/// </summary>
public interface ILogitsProcessor
{
    /// <param name="tokens">The row so far: prompt followed by the tokens generated until now.</param>
    /// <param name="promptLength">How many of <paramref name="tokens"/> are the prompt.</param>
    /// <param name="logits">The next-token logits of that row (length = vocabulary size).</param>
    void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits);
}

/// <summary>The book's top-k: logits below the k-th largest become −∞ (ties with it are kept).</summary>
internal sealed class TopKProcessor : ILogitsProcessor
{
    private float[] _heap = [];

    public TopKProcessor(int k)
    {
        if (k < 1) throw new ArgumentException($"top-k must be at least 1, got {k}.");
        K = k;
    }

    public int K { get; }

    public void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits)
    {
        if (K >= logits.Length) return; // keeps everything
        // Sized on first use, never larger than the vocabulary: k comes from requests and must not size memory.
        if (_heap.Length < K) _heap = new float[K];
        Sampling.TopK(logits, K, _heap);
    }
}

/// <summary>
/// OpenAI's <c>logit_bias</c>: a fixed value added to the logits of chosen tokens before anything else, so −100
/// all but bans a token and +100 all but forces it (the values are added, not special-cased, as OpenAI does).
/// </summary>
internal sealed class LogitBiasProcessor : ILogitsProcessor
{
    private readonly int[] _tokens;
    private readonly float[] _biases;

    public LogitBiasProcessor(IReadOnlyDictionary<int, float> bias)
    {
        foreach (var (token, value) in bias)
        {
            if (token < 0) throw new ArgumentException($"logit bias: token id {token} is negative.");
            if (!float.IsFinite(value)) throw new ArgumentException($"logit bias of token {token} must be finite, got {value}.");
        }
        _tokens = bias.Keys.Order().ToArray();
        _biases = _tokens.Select(t => bias[t]).ToArray();
    }

    public void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits)
    {
        for (int i = 0; i < _tokens.Length; i++)
        {
            if (_tokens[i] >= logits.Length) throw new ArgumentException($"logit bias: token id {_tokens[i]} is outside the vocabulary (0..{logits.Length - 1}).");
            logits[_tokens[i]] += _biases[i];
        }
    }
}

/// <summary>The book's temperature scaling: logits / T (T &gt; 0; greedy decoding uses no temperature processor).</summary>
internal sealed class TemperatureProcessor : ILogitsProcessor
{
    public TemperatureProcessor(float temperature)
    {
        if (!(temperature > 0)) throw new ArgumentException($"temperature must be positive, got {temperature}.");
        Temperature = temperature;
    }

    public float Temperature { get; }

    public void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits) => Sampling.ApplyTemperature(logits, Temperature);
}

/// <summary>
/// Nucleus sampling (Holtzman et al. 2019, Hugging Face's <c>TopPLogitsWarper</c>): keep the most probable
/// tokens whose cumulative probability first reaches <c>p</c>: a token survives when the probability mass
/// of the tokens ranked above it is below <c>p</c>, so the most probable token always survives.
/// </summary>
internal sealed class TopPProcessor : ILogitsProcessor
{
    private float[] _probabilities = [];
    private float[] _sortKeys = [];
    private int[] _sortIndices = [];

    public TopPProcessor(float p)
    {
        if (!(p > 0 && p <= 1)) throw new ArgumentException($"top-p must be in (0, 1], got {p}.");
        P = p;
    }

    public float P { get; }

    public void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits)
    {
        if (P >= 1f) return;
        EnsureCapacity(logits.Length);
        var probabilities = _probabilities.AsSpan(0, logits.Length);
        Sampling.Softmax(logits, probabilities);

        // Sort only the candidates (probability > 0): after top-k or a low temperature that is a few tokens.
        int count = 0;
        for (int i = 0; i < probabilities.Length; i++)
        {
            if (probabilities[i] > 0)
            {
                _sortKeys[count] = -probabilities[i]; // ascending sort of −p = descending p
                _sortIndices[count] = i;
                count++;
            }
        }
        var keys = _sortKeys.AsSpan(0, count);
        var indices = _sortIndices.AsSpan(0, count);
        keys.Sort(indices);

        double massAbove = 0;
        int keep = 0;
        while (keep < count && massAbove < P)
        {
            massAbove += -keys[keep];
            keep++;
        }
        for (int r = keep; r < count; r++) logits[indices[r]] = float.NegativeInfinity;
    }

    private void EnsureCapacity(int vocab)
    {
        if (_probabilities.Length >= vocab) return;
        _probabilities = new float[vocab];
        _sortKeys = new float[vocab];
        _sortIndices = new int[vocab];
    }
}

/// <summary>
/// Min-p sampling (Nguyen et al. 2024, Hugging Face's <c>MinPLogitsWarper</c>): drop every token whose
/// probability is below <c>minP</c> × the top token's probability. Because p_i / p_max = exp(l_i − l_max),
/// this needs no softmax: drop where exp(l_i − l_max) &lt; minP.
/// </summary>
internal sealed class MinPProcessor : ILogitsProcessor
{
    public MinPProcessor(float minP)
    {
        if (!(minP >= 0 && minP <= 1)) throw new ArgumentException($"min-p must be in [0, 1], got {minP}.");
        MinP = minP;
    }

    public float MinP { get; }

    public void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits)
    {
        if (MinP <= 0) return;
        float max = float.NegativeInfinity;
        foreach (float l in logits) if (l > max) max = l;
        for (int i = 0; i < logits.Length; i++)
            if (MathF.Exp(logits[i] - max) < MinP) logits[i] = float.NegativeInfinity;
    }
}

/// <summary>
/// The CTRL repetition penalty (Keskar et al. 2019) as Hugging Face applies it: every distinct token of the
/// row so far (prompt included) has its logit divided by the penalty when positive and multiplied by it when
/// negative, so a penalty &gt; 1 always makes repeats less likely. Applied once per distinct token.
/// </summary>
internal sealed class RepetitionPenaltyProcessor : ILogitsProcessor
{
    private int[] _seenStamp = [];
    private int _stamp;

    public RepetitionPenaltyProcessor(float penalty)
    {
        if (!(penalty > 0)) throw new ArgumentException($"repetition penalty must be positive, got {penalty}.");
        Penalty = penalty;
    }

    public float Penalty { get; }

    public void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits)
    {
        if (Penalty == 1f) return;
        if (_seenStamp.Length < logits.Length) { _seenStamp = new int[logits.Length]; _stamp = 0; }
        // A new stamp per call marks "seen in this row" without clearing the array.
        if (++_stamp == int.MaxValue) { Array.Clear(_seenStamp); _stamp = 1; }
        foreach (int t in tokens)
        {
            if (_seenStamp[t] == _stamp) continue;
            _seenStamp[t] = _stamp;
            float l = logits[t];
            logits[t] = l < 0 ? l * Penalty : l / Penalty;
        }
    }
}

/// <summary>
/// OpenAI's frequency and presence penalties: logit[j] −= count[j] · frequency + (count[j] &gt; 0) · presence,
/// where count[j] is how often token j was generated so far (the prompt does not count). Positive values
/// discourage repeats, negative ones encourage them.
/// </summary>
internal sealed class FrequencyPresencePenaltyProcessor : ILogitsProcessor
{
    private int[] _counts = [];

    public FrequencyPresencePenaltyProcessor(float frequencyPenalty, float presencePenalty)
    {
        if (!float.IsFinite(frequencyPenalty)) throw new ArgumentException($"frequency penalty must be finite, got {frequencyPenalty}.");
        if (!float.IsFinite(presencePenalty)) throw new ArgumentException($"presence penalty must be finite, got {presencePenalty}.");
        FrequencyPenalty = frequencyPenalty;
        PresencePenalty = presencePenalty;
    }

    public float FrequencyPenalty { get; }

    public float PresencePenalty { get; }

    public void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits)
    {
        if (_counts.Length < logits.Length) _counts = new int[logits.Length];
        var generated = tokens[promptLength..];
        foreach (int t in generated) _counts[t]++;
        foreach (int t in generated)
        {
            int c = _counts[t];
            if (c == 0) continue; // already applied for this token
            logits[t] -= c * FrequencyPenalty + PresencePenalty;
            _counts[t] = 0; // leaves the array zeroed for the next call
        }
    }
}

/// <summary>Processors applied in order to each row before a token is picked.</summary>
public sealed class LogitsPipeline : ILogitsProcessor
{
    private readonly ILogitsProcessor[] _processors;

    public LogitsPipeline(IEnumerable<ILogitsProcessor> processors) => _processors = processors.ToArray();

    public IReadOnlyList<ILogitsProcessor> Processors => _processors;

    public void Process(ReadOnlySpan<int> tokens, int promptLength, Span<float> logits)
    {
        foreach (var p in _processors) p.Process(tokens, promptLength, logits);
    }
}
