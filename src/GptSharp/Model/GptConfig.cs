namespace GptSharp.Model;

/// <summary>
/// The book's model configuration dictionary (<c>GPT_CONFIG_124M</c>) as an immutable record.
/// Use <c>with</c> to vary it: <c>GptConfig.Gpt2Small with { ContextLength = 256 }</c>.
/// </summary>
public sealed partial record GptConfig
{
    /// <summary>Number of token ids (<c>vocab_size</c>).</summary>
    public int VocabSize { get; init; } = 50257;

    /// <summary>Longest sequence the model can attend over (<c>context_length</c>).</summary>
    public int ContextLength { get; init; } = 1024;

    /// <summary>Width of every hidden state (<c>emb_dim</c>).</summary>
    public int EmbeddingDim { get; init; } = 768;

    /// <summary>Attention heads per block (<c>n_heads</c>); must divide <see cref="EmbeddingDim"/>.</summary>
    public int Heads { get; init; } = 12;

    /// <summary>Transformer blocks (<c>n_layers</c>).</summary>
    public int Layers { get; init; } = 12;

    /// <summary>Dropout probability for embeddings, attention weights and shortcuts (<c>drop_rate</c>).</summary>
    public float DropRate { get; init; } = 0.1f;

    /// <summary>Whether the query/key/value projections have biases (<c>qkv_bias</c>).</summary>
    public bool QkvBias { get; init; }

    /// <summary>Width of one attention head.</summary>
    public int HeadDim => EmbeddingDim / Heads;

    /// <summary>Hidden width of the feed-forward network (4x the embedding, as in GPT-2).</summary>
    public int HiddenDim => 4 * EmbeddingDim;

    /// <summary>The book's <c>GPT_CONFIG_124M</c> as chapter 5 trains it: context shortened to 256.</summary>
    public static GptConfig Book124M => Gpt2Small with { ContextLength = 256, QkvBias = false };

    /// <summary>GPT-2 small (124M).</summary>
    public static GptConfig Gpt2Small => new() { EmbeddingDim = 768, Layers = 12, Heads = 12 };

    /// <summary>GPT-2 medium (355M).</summary>
    public static GptConfig Gpt2Medium => new() { EmbeddingDim = 1024, Layers = 24, Heads = 16 };

    /// <summary>GPT-2 large (774M).</summary>
    public static GptConfig Gpt2Large => new() { EmbeddingDim = 1280, Layers = 36, Heads = 20 };

    /// <summary>GPT-2 XL (1558M).</summary>
    public static GptConfig Gpt2XL => new() { EmbeddingDim = 1600, Layers = 48, Heads = 25 };

    /// <summary>
    /// Looks up a preset by name: <c>124M</c> (the book's, context 256), <c>gpt2-small</c>/<c>gpt2-124M</c>,
    /// <c>gpt2-medium</c>/<c>355M</c>, <c>gpt2-large</c>/<c>774M</c>, <c>gpt2-xl</c>/<c>1558M</c>.
    /// Throws <see cref="ArgumentException"/> naming the presets for an unknown name.
    /// </summary>
    public static GptConfig FromName(string name) => TryFromName(name)
        ?? throw new ArgumentException($"unknown model config '{name}' (expected one of {string.Join(", ", PresetNames)}).");

    /// <summary><see cref="FromName"/>, or null for an unknown name.</summary>
    internal static GptConfig? TryFromName(string name) => name.ToLowerInvariant() switch
    {
        "124m" or "book" or "gpt_config_124m" => Book124M,
        "gpt2-small" or "gpt2-124m" or "small" => Gpt2Small,
        "gpt2-medium" or "gpt2-355m" or "355m" or "medium" => Gpt2Medium,
        "gpt2-large" or "gpt2-774m" or "774m" or "large" => Gpt2Large,
        "gpt2-xl" or "gpt2-1558m" or "1558m" or "xl" => Gpt2XL,
        _ => null,
    };

    /// <summary>Names accepted by <see cref="FromName"/>, for help texts.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = ["124M", "gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"];

    /// <summary>Throws <see cref="ArgumentException"/> with a one-line message when the configuration cannot build a model.</summary>
    public GptConfig Validate()
    {
        if (VocabSize <= 0) throw new ArgumentException($"vocab_size must be positive, got {VocabSize}.");
        if (ContextLength <= 0) throw new ArgumentException($"context_length must be positive, got {ContextLength}.");
        if (EmbeddingDim <= 0) throw new ArgumentException($"emb_dim must be positive, got {EmbeddingDim}.");
        if (Heads <= 0) throw new ArgumentException($"n_heads must be positive, got {Heads}.");
        if (Layers <= 0) throw new ArgumentException($"n_layers must be positive, got {Layers}.");
        if (EmbeddingDim % Heads != 0)
            throw new ArgumentException($"emb_dim ({EmbeddingDim}) must be divisible by n_heads ({Heads}).");
        if (!(DropRate >= 0f && DropRate < 1f))
            throw new ArgumentException($"drop_rate must be in [0, 1), got {DropRate}.");
        // Each parameter lives in one buffer addressed through a span: no matrix may pass int.MaxValue elements.
        CheckMatrix("tok_emb/out_head (vocab_size x emb_dim)", VocabSize, EmbeddingDim);
        CheckMatrix("pos_emb (context_length x emb_dim)", ContextLength, EmbeddingDim);
        CheckMatrix("the feed-forward weights (emb_dim x 4 emb_dim)", EmbeddingDim, 4L * EmbeddingDim);
        // Keeps ParameterCount (a long) and every byte count derived from it far from overflowing.
        if (MemoryBudget.ParameterCountEstimate(this) > 1e15)
            throw new ArgumentException($"n_layers {Layers} with emb_dim {EmbeddingDim} would make {MemoryBudget.ParameterCountEstimate(this):0.#e0} parameters; that is not a model any machine can hold.");
        return this;
    }

    private static void CheckMatrix(string what, long rows, long columns)
    {
        if ((double)rows * columns > int.MaxValue)
            throw new ArgumentException($"{what} would hold {(double)rows * columns:N0} elements, more than the {int.MaxValue:N0} one tensor can address.");
    }

    /// <summary>Number of trainable parameters of a model with this configuration (untied output head).</summary>
    public long ParameterCount
    {
        get
        {
            long e = EmbeddingDim, h = HiddenDim;
            long perBlock = 3 * (e * e + (QkvBias ? e : 0)) + (e * e + e) + (e * h + h) + (h * e + e) + 4 * e;
            return (long)VocabSize * e + (long)ContextLength * e + Layers * perBlock + 2 * e + (long)VocabSize * e;
        }
    }
}
