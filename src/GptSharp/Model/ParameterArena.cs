using GptSharp.Tensors;

namespace GptSharp.Model;

/// <summary>
/// The weights and the gradients of a list of parameters, each in one 64-byte-aligned allocation (llm.c's
/// <c>malloc_and_point_parameters</c>): a <see cref="Parameter"/> is a view at its offset. Parameters are packed
/// back to back in their order, so the model's <c>state_dict</c> is one run of memory: zeroing the gradients is one
/// clear, AdamW one loop over [0, <see cref="Length"/>), a rank's optimizer shard one range, and a file writer
/// streams the weights in one piece. The memory lives while any of its parameters does.
/// </summary>
internal sealed unsafe class ParameterArena
{
    private readonly Parameter[] _parameters;
    private int _attached;

    /// <summary>Packs <paramref name="parameters"/> in order into a new arena: each one's current weights and
    /// gradients (if it has any) are copied in and it becomes a view here, leaving the arena it was in.</summary>
    public ParameterArena(IReadOnlyList<Parameter> parameters)
    {
        if (parameters.Distinct().Count() != parameters.Count) throw new ArgumentException("A parameter is listed twice.");
        _parameters = parameters.ToArray();
        long length = 0;
        foreach (var p in _parameters) length += p.Length;
        if (length > Array.MaxLength) throw new ArgumentException($"{length:N0} parameter elements do not fit one arena (at most {Array.MaxLength:N0}).");
        Length = length;
        // Tensor allocates with calloc: pages never written (the gradients of a model that only generates) cost no RAM.
        Weights = new Tensor((int)Math.Max(1, length));
        Grads = new Tensor((int)Math.Max(1, length));
        // Every weight is streamed once per decoded token (and every gradient once per step): on huge pages, before the
        // copies below first touch them.
        PageAdvice.PreferHugePages(Weights.Data, length * sizeof(float));
        PageAdvice.PreferHugePages(Grads.Data, length * sizeof(float));
        long offset = 0;
        foreach (var p in _parameters)
        {
            p.MoveTo(this, offset);
            offset += p.Length;
        }
        _attached = _parameters.Length;
    }

    /// <summary>Number of elements: the sum of the parameters' lengths.</summary>
    public long Length { get; }

    /// <summary>Every weight, parameter after parameter (at least one element, so the pointer is never null).</summary>
    public Tensor Weights { get; }

    /// <summary>Every gradient, in the layout of <see cref="Weights"/>.</summary>
    public Tensor Grads { get; }

    /// <summary>Whether every parameter packed here still lives here (none disposed, quantized or packed elsewhere).</summary>
    public bool IsWhole => _attached == _parameters.Length;

    /// <summary>The parameters, in the order of their offsets.</summary>
    public IReadOnlyList<Parameter> Parameters => _parameters;

    /// <summary>
    /// The arena <paramref name="parameters"/> form: theirs when they are exactly one arena's live parameters in its
    /// order, else a new one they are packed into (<see cref="ParameterArena(IReadOnlyList{Parameter})"/>).
    /// </summary>
    public static ParameterArena Pack(IReadOnlyList<Parameter> parameters) => Find(parameters) ?? new ParameterArena(parameters);

    /// <summary>The arena <paramref name="parameters"/> are, exactly and in its order (a model's <c>Parameters()</c>).</summary>
    public static ParameterArena Of(IReadOnlyList<Parameter> parameters) => Find(parameters)
        ?? throw new InvalidOperationException("The parameters are not one arena's, whole and in order (pass a model's Parameters()).");

    private static ParameterArena? Find(IReadOnlyList<Parameter> parameters) =>
        parameters.Count > 0 && parameters[0].Arena is { IsWhole: true } arena && arena._parameters.Length == parameters.Count
        && !arena._parameters.Where((p, i) => !ReferenceEquals(p, parameters[i])).Any() ? arena : null;

    /// <summary>The weights, exactly <see cref="Length"/> elements.</summary>
    public Span<float> WeightSpan => Weights.Span[..(int)Length];

    /// <summary>The gradients, exactly <see cref="Length"/> elements.</summary>
    public Span<float> GradSpan => Grads.Span[..(int)Length];

    /// <summary>
    /// <paramref name="parameter"/> no longer lives here (disposed, quantized or packed elsewhere): the last one to leave
    /// frees both allocations; before that, the pages wholly inside its ranges are handed back to the OS where it can
    /// (Linux), so a model quantized while loading never holds its float32 weights whole.
    /// </summary>
    public void Detach(Parameter parameter, long offset)
    {
        if (--_attached == 0)
        {
            Weights.Dispose();
            Grads.Dispose();
            return;
        }
        Discard(Weights.Data + offset, parameter.Length);
        Discard(Grads.Data + offset, parameter.Length);
    }

    private static void Discard(float* start, long length) => PageAdvice.Discard(start, length * sizeof(float));
}
