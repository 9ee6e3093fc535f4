using GptSharp.Model;
using GptSharp.Tensors;

namespace GptSharp.Checkpoints.Gpt2;

/// <summary>What a stored GPT-2 tensor holds, which decides both its name suffix and how it is loaded.</summary>
internal enum Gpt2TensorKind
{
    /// <summary>An embedding table (<c>wte</c>, <c>wpe</c>): copied as is.</summary>
    Embedding,
    /// <summary>A LayerNorm gain (the book's <c>scale</c>): copied as is.</summary>
    NormWeight,
    /// <summary>A bias (LayerNorm <c>shift</c> or a linear bias): copied as is; <c>c_attn</c>'s is split into q/k/v.</summary>
    Bias,
    /// <summary>A Conv1D weight stored [in, out]: transposed into nn.Linear's [out, in]; <c>c_attn</c>'s is split into q/k/v first.</summary>
    Conv1DWeight,
}

/// <summary>
/// One stored GPT-2 tensor: where it lives (<paramref name="Block"/> or null for the model-level ones,
/// <paramref name="Module"/> in dotted form such as <c>attn.c_attn</c>), its shape as the book sees it
/// (Conv1D weights [in, out], without TensorFlow's leading 1) and the book parameters it fills.
/// </summary>
internal sealed record Gpt2Tensor(int? Block, string Module, Gpt2TensorKind Kind, int[] Shape, Func<GptModel, Parameter[]> Targets)
{
    /// <summary><c>c_attn</c>: query, key and value concatenated along the output axis.</summary>
    public bool IsQkv => Module == "attn.c_attn";
}

/// <summary>
/// How one publisher spells the GPT-2 tensor names: Hugging Face (<c>h.0.attn.c_attn.weight</c>) or
/// OpenAI's TensorFlow checkpoints (<c>model/h0/attn/c_attn/w</c>). The mapping itself is <see cref="Gpt2WeightMap"/>.
/// </summary>
internal sealed record Gpt2NameScheme(string Root, string BlockFormat, char Separator, string Embedding, string NormWeight, string Bias, string Conv1DWeight)
{
    public static readonly Gpt2NameScheme HuggingFace = new("", "h.{0}.", '.', ".weight", ".weight", ".bias", ".weight");
    public static readonly Gpt2NameScheme TensorFlow = new("model/", "h{0}/", '/', "", "/g", "/b", "/w");

    public string NameOf(Gpt2Tensor tensor) =>
        Root + (tensor.Block is int b ? string.Format(BlockFormat, b) : "") + tensor.Module.Replace('.', Separator) + tensor.Kind switch
        {
            Gpt2TensorKind.Embedding => Embedding,
            Gpt2TensorKind.NormWeight => NormWeight,
            Gpt2TensorKind.Bias => Bias,
            _ => Conv1DWeight,
        };
}

/// <summary>Consumes consecutive whole rows of a stored tensor (row <paramref name="firstRow"/> onwards).</summary>
internal delegate void Gpt2RowsConsumer(int firstRow, ReadOnlySpan<float> rows);

/// <summary>Reads stored GPT-2 tensors by name for <see cref="Gpt2WeightMap.LoadWeightsIntoGpt"/>.</summary>
internal interface IGpt2TensorReader
{
    /// <summary>The whole tensor into <paramref name="destination"/> (its exact element count).</summary>
    void ReadInto(string name, Span<float> destination);

    /// <summary>The tensor's rows of <paramref name="rowLength"/> floats, in order, in one or more chunks.</summary>
    void ReadRows(string name, int rowLength, Gpt2RowsConsumer consume);
}

/// <summary>
/// The book's <c>load_weights_into_gpt</c> once for every source: which GPT-2 tensor goes into which of the
/// book's parameters with which transform (c_attn split into query/key/value, Conv1D weights transposed,
/// out_head tied to wte). The Hugging Face and TensorFlow loaders differ only in names
/// (<see cref="Gpt2NameScheme"/>), in their checks and error messages, and in how they read.
/// </summary>
internal static class Gpt2WeightMap
{
    /// <summary>
    /// Every stored tensor of a GPT-2 model with <paramref name="config"/>'s sizes (no output head: it is tied),
    /// model-level first, then block by block.
    /// </summary>
    public static List<Gpt2Tensor> Tensors(GptConfig config)
    {
        int e = config.EmbeddingDim, h = config.HiddenDim;
        var tensors = new List<Gpt2Tensor>
        {
            new(null, "wte", Gpt2TensorKind.Embedding, [config.VocabSize, e], m => [m.TokenEmbedding]),
            new(null, "wpe", Gpt2TensorKind.Embedding, [config.ContextLength, e], m => [m.PositionEmbedding]),
            new(null, "ln_f", Gpt2TensorKind.NormWeight, [e], m => [m.FinalNorm.Scale]),
            new(null, "ln_f", Gpt2TensorKind.Bias, [e], m => [m.FinalNorm.Shift]),
        };
        for (int i = 0; i < config.Layers; i++)
        {
            int b = i;
            tensors.AddRange(
            [
                new(b, "ln_1", Gpt2TensorKind.NormWeight, [e], m => [m.Blocks[b].Norm1.Scale]),
                new(b, "ln_1", Gpt2TensorKind.Bias, [e], m => [m.Blocks[b].Norm1.Shift]),
                new(b, "attn.c_attn", Gpt2TensorKind.Conv1DWeight, [e, 3 * e], m => [m.Blocks[b].Query.Weight, m.Blocks[b].Key.Weight, m.Blocks[b].Value.Weight]),
                new(b, "attn.c_attn", Gpt2TensorKind.Bias, [3 * e], m => [m.Blocks[b].Query.Bias!, m.Blocks[b].Key.Bias!, m.Blocks[b].Value.Bias!]),
                new(b, "attn.c_proj", Gpt2TensorKind.Conv1DWeight, [e, e], m => [m.Blocks[b].OutProj.Weight]),
                new(b, "attn.c_proj", Gpt2TensorKind.Bias, [e], m => [m.Blocks[b].OutProj.Bias!]),
                new(b, "ln_2", Gpt2TensorKind.NormWeight, [e], m => [m.Blocks[b].Norm2.Scale]),
                new(b, "ln_2", Gpt2TensorKind.Bias, [e], m => [m.Blocks[b].Norm2.Shift]),
                new(b, "mlp.c_fc", Gpt2TensorKind.Conv1DWeight, [e, h], m => [m.Blocks[b].FeedForwardIn.Weight]),
                new(b, "mlp.c_fc", Gpt2TensorKind.Bias, [h], m => [m.Blocks[b].FeedForwardIn.Bias!]),
                new(b, "mlp.c_proj", Gpt2TensorKind.Conv1DWeight, [h, e], m => [m.Blocks[b].FeedForwardOut.Weight]),
                new(b, "mlp.c_proj", Gpt2TensorKind.Bias, [e], m => [m.Blocks[b].FeedForwardOut.Bias!]),
            ]);
        }
        return tensors;
    }

    /// <summary>
    /// Copies every tensor of <see cref="Tensors"/> (named by <paramref name="names"/>) into its place in
    /// <paramref name="gpt"/>; names and shapes must have been checked by the caller. Conv1D weights arrive
    /// row chunk by row chunk and are transposed straight into the parameters, so the only extra memory is
    /// the reader's buffer. With <paramref name="tieHead"/> the output head becomes a copy of wte, as GPT-2 ties them.
    /// </summary>
    public static void LoadWeightsIntoGpt(GptModel gpt, IGpt2TensorReader reader, Gpt2NameScheme names, bool tieHead)
    {
        foreach (var tensor in Tensors(gpt.Config))
        {
            string name = names.NameOf(tensor);
            var targets = tensor.Targets(gpt);
            if (tensor.Kind == Gpt2TensorKind.Conv1DWeight)
            {
                // [in, out] = [W_1ᵀ | W_2ᵀ | ...] along the last axis (the book's np.split(w, n, axis=-1), each part .T).
                int inFeatures = tensor.Shape[0], rowLength = tensor.Shape[1], partLength = rowLength / targets.Length;
                reader.ReadRows(name, rowLength, (firstRow, rows) =>
                {
                    int rowCount = rows.Length / rowLength;
                    for (int part = 0; part < targets.Length; part++)
                        TransposeRowsInto(rows, rowCount, rowLength, part * partLength, partLength, targets[part].Value, inFeatures, firstRow);
                });
            }
            else if (targets.Length == 1)
            {
                reader.ReadInto(name, targets[0].Value.Span);
            }
            else
            {
                var joined = new float[tensor.Shape[0]]; // c_attn's bias: np.split(b, 3, axis=-1)
                reader.ReadInto(name, joined);
                int partLength = joined.Length / targets.Length;
                for (int part = 0; part < targets.Length; part++)
                {
                    var values = joined.AsSpan(part * partLength, partLength);
                    // A model without qkv_bias has no parameter here (the book's Linear(bias=False)): only zeros fit it.
                    if (targets[part] is { } bias) values.CopyTo(bias.Value.Span);
                    else if (values.ContainsAnyExcept(0f))
                        throw new InvalidDataException($"'{name}' is not zero but the config says qkv_bias = false: the model has no query/key/value biases to hold it.");
                }
            }
            foreach (var target in targets) if (target is not null) gpt.WeightLoaded(target);
        }
        if (tieHead) gpt.TieOutHeadToTokenEmbedding(); // gpt.out_head.weight = assign(..., params["wte"])
    }

    /// <summary>
    /// Writes columns [<paramref name="columnStart"/>, +<paramref name="columns"/>) of a chunk of
    /// source rows (source row r = input feature firstRow + r) as destination rows:
    /// dest[j, firstRow + r] = src[r, columnStart + j]. Blocks of 16 source rows keep both sides cache-friendly.
    /// </summary>
    internal static unsafe void TransposeRowsInto(ReadOnlySpan<float> source, int rowCount, int sourceRowLength, int columnStart, int columns,
        Tensor destination, int destinationRowLength, int firstRow)
    {
        float* dst = destination.Data;
        fixed (float* src = source)
        {
            const int Block = 16;
            for (int r0 = 0; r0 < rowCount; r0 += Block)
            {
                int rn = Math.Min(Block, rowCount - r0);
                for (int j = 0; j < columns; j++)
                {
                    float* d = dst + (long)j * destinationRowLength + firstRow + r0;
                    float* s = src + (long)r0 * sourceRowLength + columnStart + j;
                    for (int r = 0; r < rn; r++) d[r] = s[(long)r * sourceRowLength];
                }
            }
        }
    }
}
