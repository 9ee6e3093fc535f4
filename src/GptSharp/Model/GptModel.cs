using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Model;

/// <summary>
/// The book's <c>GPTModel</c>: token + position embeddings, dropout, transformer blocks
/// (pre-LayerNorm causal multi-head attention and a GELU feed-forward network, each with a
/// residual shortcut), a final LayerNorm and an untied linear output head.
/// </summary>
public sealed partial class GptModel : IDisposable
{
    private readonly List<Parameter> _parameters = new();
    private readonly List<Action> _initializers = new();

    /// <summary>
    /// Builds the model and initializes it as PyTorch does by default, drawing from
    /// <paramref name="generator"/> in the order <c>GPTModel.__init__</c> creates the layers
    /// (Linear: U(-1/√fan_in, 1/√fan_in) for weight then bias; Embedding: N(0, 1); LayerNorm: ones and zeros).
    /// Without a generator the weights stay zero (for loading a checkpoint into).
    /// </summary>
    public GptModel(GptConfig config, IRandomGenerator? generator = null)
    {
        Config = config.Validate();
        MemoryBudget.Require(MemoryBudget.ModelBytes(config), $"a model with {config.Layers} layers of width {config.EmbeddingDim}, vocabulary {config.VocabSize} and context {config.ContextLength}");
        int v = config.VocabSize, c = config.ContextLength, e = config.EmbeddingDim, h = config.HiddenDim;

        TokenEmbedding = Embedding("tok_emb.weight", v, e, generator);
        PositionEmbedding = Embedding("pos_emb.weight", c, e, generator);
        Blocks = new TransformerBlockParameters[config.Layers];
        for (int i = 0; i < config.Layers; i++)
        {
            string p = $"trf_blocks.{i}.";
            var block = new TransformerBlockParameters
            {
                Query = Linear(p + "att.W_query", e, e, config.QkvBias, generator),
                Key = Linear(p + "att.W_key", e, e, config.QkvBias, generator),
                Value = Linear(p + "att.W_value", e, e, config.QkvBias, generator),
                OutProj = Linear(p + "att.out_proj", e, e, true, generator),
                FeedForwardIn = Linear(p + "ff.layers.0", e, h, true, generator),
                FeedForwardOut = Linear(p + "ff.layers.2", h, e, true, generator),
                Norm1 = LayerNorm(p + "norm1", e),
                Norm2 = LayerNorm(p + "norm2", e),
            };
            Blocks[i] = block;
        }
        FinalNorm = LayerNorm("final_norm", e);
        OutHead = Linear("out_head", e, v, false, generator).Weight;
        // Every parameter declared: one allocation for all, then the initial values in the order PyTorch draws them.
        _ = new ParameterArena(_parameters);
        foreach (var initialize in _initializers) initialize();
        _initializers.Clear();
        DropoutGenerator = generator ?? new FastRandom(0);
    }

    /// <summary>The configuration the model was built with.</summary>
    public GptConfig Config { get; }

    /// <summary><c>tok_emb.weight</c> [vocab, emb].</summary>
    public Parameter TokenEmbedding { get; }

    /// <summary><c>pos_emb.weight</c> [context, emb].</summary>
    public Parameter PositionEmbedding { get; }

    /// <summary>The parameters of each transformer block.</summary>
    public TransformerBlockParameters[] Blocks { get; }

    /// <summary><c>final_norm.scale</c> / <c>.shift</c>.</summary>
    public LayerNormParameters FinalNorm { get; }

    /// <summary><c>out_head.weight</c> [vocab, emb] (no bias).</summary>
    public Parameter OutHead { get; }

    /// <summary>The stream dropout masks are drawn from (the book's global torch generator).</summary>
    public IRandomGenerator DropoutGenerator { get; set; }

    /// <summary>Every parameter, in the order of the book's <c>model.parameters()</c>.</summary>
    public IReadOnlyList<Parameter> Parameters() => _parameters;

    /// <summary>The parameters by their book names, in <c>state_dict()</c> order (the causal-mask buffers are not stored).</summary>
    public IReadOnlyDictionary<string, Tensor> StateDict()
    {
        var dict = new OrderedDictionary<string, Tensor>();
        foreach (var p in _parameters) dict.Add(p.Name, p.Value);
        return dict;
    }

    /// <summary>Total number of parameter elements (the book's <c>sum(p.numel() for p in model.parameters())</c>).</summary>
    public long ParameterCount => _parameters.Sum(p => p.Length);

    /// <summary>Declares a parameter, placed in the arena once all are declared, then initialized by <paramref name="initialize"/>.</summary>
    private Parameter Add(string name, int[] shape, Action<Parameter>? initialize = null)
    {
        var p = new Parameter(name, shape, standalone: false);
        _parameters.Add(p);
        if (initialize != null) _initializers.Add(() => initialize(p));
        return p;
    }

    private Parameter Embedding(string name, int count, int dim, IRandomGenerator? generator) =>
        Add(name, [count, dim], generator == null ? null : p => generator.Normal(p.Value.Span, 0.0, 1.0));

    private LinearParameters Linear(string name, int inFeatures, int outFeatures, bool bias, IRandomGenerator? generator)
    {
        // nn.Linear.reset_parameters: kaiming_uniform_(weight, a=√5) then bias ~ U(-1/√fan_in, 1/√fan_in).
        // Computed in double exactly as torch.nn.init does, so the bounds match PyTorch to the last bit.
        double a = Math.Sqrt(5.0);
        double gain = Math.Sqrt(2.0 / (1 + a * a));
        double std = gain / Math.Sqrt(inFeatures);
        double weightBound = Math.Sqrt(3.0) * std;
        double biasBound = inFeatures > 0 ? 1 / Math.Sqrt(inFeatures) : 0;

        var weight = Add(name + ".weight", [outFeatures, inFeatures], generator == null ? null : p => generator.Uniform(p.Value.Span, -weightBound, weightBound));
        var b = bias ? Add(name + ".bias", [outFeatures], generator == null ? null : p => generator.Uniform(p.Value.Span, -biasBound, biasBound)) : null;
        return new LinearParameters(weight, b);
    }

    private LayerNormParameters LayerNorm(string name, int dim)
    {
        var scale = Add(name + ".scale", [dim], p => p.Value.Span.Fill(1f));
        var shift = Add(name + ".shift", [dim]);
        return new LayerNormParameters(scale, shift);
    }

    public void Dispose()
    {
        DisposeActivations();
        _sequenceStepActivations?.Dispose();
        foreach (var p in _parameters) p.Dispose();
    }
}

/// <summary>Weight [out, in] and optional bias [out] of an <c>nn.Linear</c>: y = x·Wᵀ + b.</summary>
public sealed record LinearParameters(Parameter Weight, Parameter? Bias);

/// <summary><c>scale</c> and <c>shift</c> of the book's LayerNorm.</summary>
public sealed record LayerNormParameters(Parameter Scale, Parameter Shift);

/// <summary>The parameters of one <c>TransformerBlock</c>.</summary>
public sealed class TransformerBlockParameters
{
    public required LinearParameters Query { get; init; }
    public required LinearParameters Key { get; init; }
    public required LinearParameters Value { get; init; }
    public required LinearParameters OutProj { get; init; }
    public required LinearParameters FeedForwardIn { get; init; }
    public required LinearParameters FeedForwardOut { get; init; }
    public required LayerNormParameters Norm1 { get; init; }
    public required LayerNormParameters Norm2 { get; init; }
}
