using GptSharp.Tensors;
using GptSharp.Layers;

namespace GptSharp.Model;

/// <summary>How a model's linear weights are held in memory.</summary>
public enum WeightQuantization
{
    /// <summary>float32, as trained (the default).</summary>
    None,

    /// <summary>int8 with one float32 scale per 32 inputs (<see cref="GptModel.QuantizeInt8"/>): inference only.</summary>
    Int8,
}

/// <summary>
/// Weight-only int8 quantization for inference: every linear weight (the blocks' six and the output head) becomes an
/// <see cref="Int8Matrix"/> (int8 + one float32 scale per 32 inputs); embeddings, LayerNorms and biases stay float32
/// (they are gathered or tiny, not streamed per token). The layers dispatch on the weight they hold, so
/// <see cref="Forward"/> under <see cref="NoGrad"/>, <see cref="Prefill(KvCache, TokenBatch)"/> and <see cref="Step(KvCache, ReadOnlySpan{int})"/>
/// (and so every generation feature built on them) run unchanged on a quantized model. Training needs float32 weights and gradients: refused.
/// </summary>
public sealed unsafe partial class GptModel
{
    internal const string QuantizedTrainingMessage =
        "This model's weights are quantized to int8 (inference only): it cannot be trained. Load the float32 model to train or fine-tune it.";

    /// <summary>True once any linear weight is int8 (<see cref="QuantizeInt8"/>, or loaded from an int8 file).</summary>
    public bool IsQuantized { get; private set; }

    /// <summary>
    /// Quantizes every linear weight to int8 in place and frees its float32 copy (about 3.5× less memory and bytes
    /// read per generated token). The model is switched to eval mode and can no longer be trained. Idempotent.
    /// </summary>
    public void QuantizeInt8()
    {
        IsQuantized = true;
        foreach (var weight in LinearWeights()) weight.QuantizeInt8();
        DropFloatArena();
        Eval();
    }

    /// <summary>
    /// Once the linear weights are int8, the parameters still float32 (embeddings, LayerNorms, biases) move to an arena
    /// of their own and the model's float32 arena, weights and gradients, is freed at once. Nothing when already done.
    /// </summary>
    internal void DropFloatArena()
    {
        if (IsQuantized) _ = ParameterArena.Pack(_parameters.Where(p => p.Int8 == null).ToList());
    }

    /// <summary>The weights of every linear layer, in <c>state_dict</c> order: what <see cref="QuantizeInt8"/> quantizes.</summary>
    public IEnumerable<Parameter> LinearWeights()
    {
        foreach (var block in Blocks)
        {
            yield return block.Query.Weight;
            yield return block.Key.Weight;
            yield return block.Value.Weight;
            yield return block.OutProj.Weight;
            yield return block.FeedForwardIn.Weight;
            yield return block.FeedForwardOut.Weight;
        }
        yield return OutHead;
    }

    /// <summary>Set by a loader that quantizes tensor by tensor (<see cref="WeightLoaded"/>), so the float32 model never exists whole.</summary>
    internal bool QuantizeWhileLoading { get; set; }

    /// <summary>
    /// Called by loaders once <paramref name="parameter"/> holds its final float32 values: with
    /// <see cref="QuantizeWhileLoading"/>, a linear weight is quantized at once and its pages of the float32 arena are
    /// handed back to the OS (Linux; <see cref="ParameterArena.Detach"/>), so peak memory is the int8 model plus one
    /// float32 tensor, not the float32 model. The loader then drops the arena whole (<see cref="DropFloatArena"/>).
    /// </summary>
    internal void WeightLoaded(Parameter parameter)
    {
        if (!QuantizeWhileLoading || parameter.Int8 != null) return;
        if (!LinearWeights().Contains(parameter)) return;
        IsQuantized = true;
        parameter.QuantizeInt8();
    }

    /// <summary>True when the output head holds exactly the token embedding (GPT-2's tied head): an export may store it once.</summary>
    internal bool IsOutHeadTiedToTokenEmbedding() =>
        OutHead.Int8 is null && TokenEmbedding.Int8 is null && OutHead.Value.Span.SequenceEqual(TokenEmbedding.Value.Span);

    /// <summary>
    /// The output head becomes a copy of the token embedding (GPT-2 ties them). While quantizing at load, it is
    /// quantized straight from the embedding, so no float32 copy of the head (257 MB for GPT-2 large) is ever made.
    /// </summary>
    internal void TieOutHeadToTokenEmbedding()
    {
        if (!QuantizeWhileLoading)
        {
            OutHead.Value.CopyFrom(TokenEmbedding.Value);
            return;
        }
        IsQuantized = true;
        OutHead.UseInt8(Int8Matrix.Quantize(TokenEmbedding.Value.Data, TokenEmbedding.Value.Size(0), TokenEmbedding.Value.Size(1)));
    }

    /// <summary>Gives linear weight <paramref name="parameter"/> int8 values read from a file (its float32 copy is freed).</summary>
    internal void UseInt8(Parameter parameter, Int8Matrix quantized)
    {
        if (!LinearWeights().Contains(parameter)) throw new ArgumentException($"{parameter.Name} is not a linear weight: only those can be int8.");
        IsQuantized = true;
        parameter.UseInt8(quantized);
        Eval();
    }

    private static void Linear(float* output, float* input, LinearParameters linear, int rows, int inFeatures, int outFeatures, bool rowExact)
        => Linear(output, input, linear.Weight, linear.Bias, rows, inFeatures, outFeatures, rowExact);

    /// <summary>Whether <see cref="LinearQkv"/> fuses a decoding step's three projections (a switch for benchmarks to A/B in one process).</summary>
    internal static bool FuseSkinnyQkv = true;

    /// <summary>
    /// The query, key and value projections of one block. A decoding step or a short prompt (the direct GEMM's rows) on
    /// float32 weights runs the three in one pool run: the step is bound by reading the weights, and each separate call
    /// ended with a join where one core waited for the other's last chunk. Same results as three <see cref="Linear"/> calls.
    /// </summary>
    private static void LinearQkv(float* q, float* k, float* v, float* input, TransformerBlockParameters block, int rows, int c, bool rowExact)
    {
        if (FuseSkinnyQkv && Gemm.IsSkinny(rows, transposeB: true, rowExact) && block.Query.Weight.Int8 == null && block.Key.Weight.Int8 == null && block.Value.Weight.Int8 == null)
        {
            Kernels.LinearForward3(input, rows, c, c,
                block.Query.Weight.Value.Data, BiasData(block.Query), q,
                block.Key.Weight.Value.Data, BiasData(block.Key), k,
                block.Value.Weight.Value.Data, BiasData(block.Value), v);
            return;
        }
        Linear(q, input, block.Query, rows, c, c, rowExact);
        Linear(k, input, block.Key, rows, c, c, rowExact);
        Linear(v, input, block.Value, rows, c, c, rowExact);
    }

    private static float* BiasData(LinearParameters linear) => linear.Bias != null ? linear.Bias.Value.Data : null;

    /// <summary>y = x·Wᵀ + b on whichever weights the layer holds (float32 or int8).</summary>
    /// <param name="rowExact">The incremental forward: each float32 row exactly as alone up to <see cref="Gemm.RowExactRows"/> rows.</param>
    private static void Linear(float* output, float* input, Parameter weight, Parameter? bias, int rows, int inFeatures, int outFeatures, bool rowExact = false)
    {
        float* b = bias != null ? bias.Value.Data : null;
        if (weight.Int8 is { } quantized) Int8Kernels.LinearForwardInt8(output, input, quantized, b, rows);
        else Kernels.LinearForward(output, input, weight.Value.Data, b, rows, inFeatures, outFeatures, rowExact);
    }
}
