using GptSharp.Randomness;

namespace GptSharp.Generation;

/// <summary>
/// How every decoder here turns one row of next-token logits into a token: a copy of the row goes through the
/// sequence's logits pipeline (logit bias, penalties, top-k, temperature with its T → 0 greedy limit, top-p, min-p),
/// then the argmax when the temperature is 0, or one <c>torch.multinomial</c> draw from its softmax with the
/// sequence's seeded generator. Also the model's own log-probabilities of a pick, as OpenAI reports them.
/// </summary>
/// <remarks>
/// A sampler holds one sequence's state (its pipeline, whose penalties see that sequence's tokens, and its generator);
/// the scratch row is the caller's, so one buffer serves every sequence a decoder runs. Nothing is allocated per token.
/// </remarks>
internal sealed class TokenSampler
{
    private readonly LogitsPipeline _pipeline;
    private readonly IRandomGenerator? _generator;
    private readonly bool _sample;

    /// <param name="generator">The seeded generator draws are taken from; needed when the temperature is positive.</param>
    public TokenSampler(GenerationOptions options, IRandomGenerator? generator)
    {
        _sample = options.Temperature > 0;
        if (_sample && generator is null) throw new ArgumentException("sampling with a temperature > 0 needs a random generator (a seed).");
        _pipeline = options.CreatePipeline();
        _generator = generator;
    }

    /// <summary>
    /// Copies <paramref name="logits"/> into <paramref name="scratch"/> and applies the pipeline: what the pick (or a
    /// beam's log-softmax) reads. <paramref name="tokens"/> is the row so far, its first <paramref name="promptLength"/> the prompt.
    /// </summary>
    public Span<float> Process(ReadOnlySpan<int> tokens, int promptLength, ReadOnlySpan<float> logits, Span<float> scratch)
    {
        var work = scratch[..logits.Length];
        logits.CopyTo(work);
        _pipeline.Process(tokens, promptLength, work);
        return work;
    }

    /// <summary>The next token of the row: argmax of the processed logits, or one multinomial draw from their softmax.</summary>
    public int Pick(ReadOnlySpan<int> tokens, int promptLength, ReadOnlySpan<float> logits, Span<float> scratch)
    {
        var work = Process(tokens, promptLength, logits, scratch);
        if (!_sample) return Sampling.Argmax(work);
        Sampling.Softmax(work, work);
        return _generator!.Multinomial(work);
    }

    /// <summary>
    /// log-softmax of the raw <paramref name="logits"/> (the model's own distribution, before any processor) at
    /// <paramref name="token"/>, and the <paramref name="topCount"/> most likely tokens, largest first (none when 0).
    /// </summary>
    public static float LogProbability(ReadOnlySpan<float> logits, int token, int topCount, Span<float> scratch, out TokenLogprob[] top)
    {
        var logprobs = scratch[..logits.Length];
        Sampling.LogSoftmax(logits, logprobs);
        top = TopEntries(logprobs, topCount);
        return logprobs[token];
    }

    /// <summary>The <paramref name="count"/> largest entries, largest first (a small insertion sort: count ≤ 20).</summary>
    internal static TokenLogprob[] TopEntries(ReadOnlySpan<float> values, int count)
    {
        count = Math.Min(count, values.Length);
        if (count <= 0) return [];
        var top = new TokenLogprob[count];
        int filled = 0;
        for (int i = 0; i < values.Length; i++)
        {
            float v = values[i];
            if (filled == count && !(v > top[count - 1].Logprob)) continue;
            int at = Math.Min(filled, count - 1);
            while (at > 0 && v > top[at - 1].Logprob) { top[at] = top[at - 1]; at--; }
            top[at] = new TokenLogprob(i, v);
            if (filled < count) filled++;
        }
        return top;
    }
}
