namespace GptSharp.Generation;

/// <summary>
/// How <see cref="TextGenerator"/> picks tokens. The defaults are the book's greedy decoding; the book's
/// <c>generate</c> options are <see cref="Temperature"/>, <see cref="TopK"/> and <see cref="EosId"/>, the rest go beyond it.
/// </summary>
public sealed record GenerationOptions
{
    /// <summary>0 = greedy (argmax); &gt; 0 = sample from softmax(logits / temperature).</summary>
    public float Temperature { get; init; }

    /// <summary>Keep only logits ≥ the k-th largest (the book's top-k); null = off.</summary>
    public int? TopK { get; init; }

    /// <summary>Nucleus sampling: keep the smallest set of most probable tokens whose mass reaches p; null = off.</summary>
    public float? TopP { get; init; }

    /// <summary>Min-p sampling: drop tokens less probable than minP × the top token's probability; null = off.</summary>
    public float? MinP { get; init; }

    /// <summary>CTRL/Hugging Face repetition penalty (1 = off; &gt; 1 discourages tokens already in the row).</summary>
    public float RepetitionPenalty { get; init; } = 1f;

    /// <summary>OpenAI frequency penalty: subtracted once per earlier occurrence in the generated text (0 = off).</summary>
    public float FrequencyPenalty { get; init; }

    /// <summary>OpenAI presence penalty: subtracted once from every token already generated (0 = off).</summary>
    public float PresencePenalty { get; init; }

    /// <summary>OpenAI's logit bias: token id → value added to its logit before every other processor; null = none.</summary>
    public IReadOnlyDictionary<int, float>? LogitBias { get; init; }

    /// <summary>Stop a row when it produces this id (the book's <c>eos_id</c>); null = never.</summary>
    public int? EosId { get; init; }

    /// <summary>Beam search with this many beams (1 = off). Deterministic: cannot be combined with a temperature.</summary>
    public int NumBeams { get; init; } = 1;

    /// <summary>Beam scores are sum of log-probabilities / length^LengthPenalty (&gt; 0 favours longer, &lt; 0 shorter).</summary>
    public float LengthPenalty { get; init; } = 1f;

    /// <summary>Beam search stops as soon as NumBeams hypotheses have ended with EOS (Hugging Face's <c>early_stopping=True</c>).</summary>
    public bool EarlyStopping { get; init; }

    /// <summary>Use the KV cache (false = the book's loop: the whole window through the model for every token).</summary>
    public bool UseCache { get; init; } = true;

    /// <summary>
    /// When the sequence outgrows the context, keep the last <c>ContextSize</c> tokens (the book's crop); false =
    /// stop generating there, and reject a prompt longer than the context.
    /// </summary>
    public bool Slide { get; init; } = true;

    /// <summary>The window the model sees (the book's <c>context_size</c>); null = the model's context length.</summary>
    public int? ContextSize { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> with a one-line message naming the first bad option.</summary>
    public GenerationOptions Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature))
            throw new ArgumentException($"GenerationOptions.Temperature must be a finite number ≥ 0, got {Temperature}.");
        if (TopK is < 1) throw new ArgumentException($"GenerationOptions.TopK must be at least 1, got {TopK}.");
        if (TopP is { } p && !(p > 0 && p <= 1)) throw new ArgumentException($"GenerationOptions.TopP must be in (0, 1], got {p}.");
        if (MinP is { } m && !(m >= 0 && m <= 1)) throw new ArgumentException($"GenerationOptions.MinP must be in [0, 1], got {m}.");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty))
            throw new ArgumentException($"GenerationOptions.RepetitionPenalty must be a finite number > 0, got {RepetitionPenalty}.");
        if (!float.IsFinite(FrequencyPenalty)) throw new ArgumentException($"GenerationOptions.FrequencyPenalty must be finite, got {FrequencyPenalty}.");
        if (!float.IsFinite(PresencePenalty)) throw new ArgumentException($"GenerationOptions.PresencePenalty must be finite, got {PresencePenalty}.");
        if (LogitBias is { } bias)
            foreach (var (token, value) in bias)
                if (token < 0 || !float.IsFinite(value)) throw new ArgumentException($"logit bias {token}: {value} must be a token id ≥ 0 with a finite value.");
        if (EosId is < 0) throw new ArgumentException($"GenerationOptions.EosId must be a token id ≥ 0, got {EosId}.");
        if (NumBeams < 1) throw new ArgumentException($"GenerationOptions.NumBeams must be at least 1, got {NumBeams}.");
        if (NumBeams > 1 && Temperature > 0)
            throw new ArgumentException("GenerationOptions.NumBeams > 1 is deterministic beam search: it cannot be combined with GenerationOptions.Temperature > 0.");
        if (!float.IsFinite(LengthPenalty)) throw new ArgumentException($"GenerationOptions.LengthPenalty must be finite, got {LengthPenalty}.");
        if (ContextSize is < 1) throw new ArgumentException($"the context size must be at least 1, got {ContextSize}.");
        return this;
    }

    /// <summary>
    /// The logits processors these options ask for, in the order they apply: the logit bias, penalties on the raw logits
    /// (as Hugging Face and OpenAI do), then the book's top-k and temperature, then top-p and min-p on the
    /// tempered distribution.
    /// </summary>
    public LogitsPipeline CreatePipeline()
    {
        var processors = new List<ILogitsProcessor>();
        if (LogitBias is { Count: > 0 } bias) processors.Add(new LogitBiasProcessor(bias));
        if (RepetitionPenalty != 1f) processors.Add(new RepetitionPenaltyProcessor(RepetitionPenalty));
        if (FrequencyPenalty != 0f || PresencePenalty != 0f) processors.Add(new FrequencyPresencePenaltyProcessor(FrequencyPenalty, PresencePenalty));
        if (TopK is { } k) processors.Add(new TopKProcessor(k));
        if (Temperature > 0) processors.Add(new TemperatureProcessor(Temperature));
        if (TopP is { } p && p < 1) processors.Add(new TopPProcessor(p));
        if (MinP is { } m && m > 0) processors.Add(new MinPProcessor(m));
        return new LogitsPipeline(processors);
    }
}
