using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;

namespace GptSharp.Checkpoints;

/// <summary>
/// Loads tensors named as the book's <c>state_dict()</c> into a <see cref="GptModel"/>, with the checks of
/// PyTorch's <c>load_state_dict</c> and the book's <c>assign</c>: every name present, no unexpected name,
/// every shape equal. All checks run before the first byte is read, so a mismatch never leaves a half-loaded model.
/// </summary>
internal static partial class StateDictLoader
{
    /// <summary>True for the book's causal-mask buffers (<c>trf_blocks.N.att.mask</c>): stored by PyTorch, not parameters.</summary>
    public static bool IsMaskBuffer(string name) => name.StartsWith("trf_blocks.", StringComparison.Ordinal) && name.EndsWith(".att.mask", StringComparison.Ordinal);

    /// <summary>
    /// A new model of <paramref name="config"/> filled by <paramref name="load"/>; disposed again if loading fails. With
    /// <paramref name="quantize"/> each linear weight becomes int8 as soon as it is read (<c>GptModel.WeightLoaded</c>), in
    /// whichever format's loader, so the float32 model never exists whole.
    /// </summary>
    public static GptModel NewModel(GptConfig config, Action<GptModel> load, bool quantize = false)
    {
        var model = new GptModel(config) { QuantizeWhileLoading = quantize };
        try
        {
            load(model);
            model.DropFloatArena();
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>A new model of <paramref name="config"/> holding the book-named tensors of <paramref name="source"/>.</summary>
    public static GptModel Load(GptConfig config, ITensorSource source, bool quantize = false)
    {
        CheckConfigFitsFile(config, source);
        return NewModel(config, model => LoadInto(model, source), quantize);
    }

    /// <summary>
    /// Guards building a model for a file. The config comes from metadata, a config.json or the names in the file, and
    /// the model is allocated before its tensors are read (and their names and shapes checked): a config that needs far
    /// more parameters than the file's tensors hold is refused first, so memory stays bounded by the file's real size.
    /// The slack (twice the stored values plus 1M) leaves small mismatches to the precise name and shape checks.
    /// </summary>
    public static void CheckConfigFitsFile(GptConfig config, ITensorSource source) =>
        CheckConfigFitsFile(config, source.FilePath, source.Tensors.Sum(t => t.ElementCount));

    /// <inheritdoc cref="CheckConfigFitsFile(GptConfig, ITensorSource)"/>
    public static void CheckConfigFitsFile(GptConfig config, string file, long storedValues)
    {
        long needed = config.ParameterCount;
        if (needed > 2 * storedValues + (1 << 20))
            throw new InvalidDataException($"{file}: the config ({config.Layers} layers, emb_dim {config.EmbeddingDim}, vocab_size {config.VocabSize}, "
                + $"context_length {config.ContextLength}) needs {needed:N0} parameters but the file's tensors hold only {storedValues:N0} values.");
    }

    /// <summary>
    /// The number of blocks named by <paramref name="blockIndex"/> matches (the highest index + 1), refusing an index that
    /// does not fit an int or is larger than the number of tensors could justify (a name like <c>trf_blocks.99999999.x</c>).
    /// </summary>
    public static int CountBlocks(IEnumerable<string> names, Regex blockIndex, string file)
    {
        int highest = -1, matching = 0;
        foreach (string name in names)
        {
            var m = blockIndex.Match(name);
            if (!m.Success) continue;
            matching++;
            string digits = m.Groups[1].Value;
            if (!int.TryParse(digits, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int index))
                throw new InvalidDataException($"{file}: tensor '{name}' has block index {(digits.Length > 20 ? digits[..20] + "..." : digits)}, out of range.");
            highest = Math.Max(highest, index);
        }
        // Every block has at least one tensor, so the blocks cannot outnumber the block tensors.
        if (highest + 1 > matching)
            throw new InvalidDataException($"{file}: a tensor names block {highest} but the file has only {matching} block tensors.");
        return highest + 1;
    }

    /// <summary>
    /// Copies every parameter of <paramref name="model"/> from <paramref name="source"/> (straight into the parameter's buffer).
    /// A linear weight stored as int8 (an I8 tensor and its F32 <c>_scale</c> tensor, see docs/int8.md) is loaded as int8.
    /// </summary>
    public static void LoadInto(GptModel model, ITensorSource source)
    {
        var parameters = model.Parameters();
        var int8 = IsInt8File(source) ? new HashSet<Parameter>(model.LinearWeights()) : [];
        var known = new HashSet<string>(parameters.Select(p => p.Name), StringComparer.Ordinal);
        foreach (var p in int8) known.Add(p.Name + ModelFile.Int8ScaleSuffix);
        foreach (var t in source.Tensors)
            if (!known.Contains(t.Name) && !IsMaskBuffer(t.Name))
                throw new InvalidDataException($"{source.FilePath}: unexpected tensor '{t.Name}' {t.ShapeString}: the model has no such parameter.");
        foreach (var p in parameters)
        {
            var stored = source.Find(p.Name)
                ?? throw new InvalidDataException($"{source.FilePath}: missing tensor '{p.Name}' (the model expects shape {p.Value.ShapeString}).");
            CheckShape(source.FilePath, p.Name, stored.Shape, p.Value.ShapeArray);
            if (int8.Contains(p) && stored.DType == TensorDType.I8)
            {
                string scaleName = p.Name + ModelFile.Int8ScaleSuffix;
                var scales = source.Find(scaleName)
                    ?? throw new InvalidDataException($"{source.FilePath}: int8 tensor '{p.Name}' has no scales '{scaleName}'.");
                int rows = p.Value.Size(0), blocks = (p.Value.Size(1) + Int8Matrix.BlockSize - 1) / Int8Matrix.BlockSize;
                CheckShape(source.FilePath, scaleName, scales.Shape, [rows, blocks]);
                if (scales.DType != TensorDType.F32)
                    throw new InvalidDataException($"{source.FilePath}: tensor '{scaleName}' has dtype {scales.DType.SafeTensorsName()}, expected F32.");
            }
            else if (!stored.DType.IsConvertibleToFloat() || stored.DType == TensorDType.I8)
                throw new InvalidDataException($"{source.FilePath}: tensor '{p.Name}' has dtype {stored.DType.SafeTensorsName()}, expected a float type.");
        }
        foreach (var p in parameters)
        {
            if (int8.Contains(p) && source.Find(p.Name)!.DType == TensorDType.I8) model.UseInt8(p, ReadInt8((SafeTensorsFile)source, p));
            else
            {
                source.ReadInto(p.Name, p.Value.Span);
                model.WeightLoaded(p);
            }
        }
    }

    /// <summary>True for a model file written by a quantized model (<see cref="ModelFile.QuantizationKey"/>).</summary>
    private static bool IsInt8File(ITensorSource source) => source is SafeTensorsFile file
        && file.Metadata.TryGetValue(ModelFile.QuantizationKey, out var q) && q == ModelFile.Int8Quantization;

    private static Int8Matrix ReadInt8(SafeTensorsFile file, Parameter p)
    {
        var matrix = new Int8Matrix(p.Value.Size(0), p.Value.Size(1));
        try
        {
            file.ReadInt8(p.Name, MemoryMarshal.Cast<byte, sbyte>(matrix.ValueSpan));
            file.ReadInto(p.Name + ModelFile.Int8ScaleSuffix, matrix.ScaleSpan);
            foreach (float scale in matrix.ScaleSpan)
                if (!(scale >= 0 && float.IsFinite(scale)))
                    throw new InvalidDataException($"{file.FilePath}: tensor '{p.Name}{ModelFile.Int8ScaleSuffix}' has a negative or non-finite scale ({scale}).");
            return matrix;
        }
        catch
        {
            matrix.Dispose();
            throw;
        }
    }

    /// <summary>The book's shape check: one message naming the tensor and both shapes.</summary>
    public static void CheckShape(string file, string name, ReadOnlySpan<int> stored, ReadOnlySpan<int> expected)
    {
        if (!stored.SequenceEqual(expected))
            throw new InvalidDataException($"{file}: shape mismatch for '{name}': the file has [{string.Join(", ", stored.ToArray())}], the model expects [{string.Join(", ", expected.ToArray())}].");
    }

    /// <summary>
    /// The configuration implied by book-named tensors: vocabulary and width from <c>tok_emb.weight</c>, context from
    /// <c>pos_emb.weight</c>, layers by counting blocks, <c>qkv_bias</c> from <c>W_query.bias</c>. Shapes don't
    /// determine the head count: <paramref name="heads"/>, or GPT-2's for its widths (64-wide heads), else an error.
    /// </summary>
    public static GptConfig InferConfig(ITensorSource source, int? heads = null)
    {
        var tok = source.Find("tok_emb.weight") ?? throw new InvalidDataException($"{source.FilePath}: no 'tok_emb.weight': not a GptSharp/book model.");
        var pos = source.Find("pos_emb.weight") ?? throw new InvalidDataException($"{source.FilePath}: no 'pos_emb.weight': not a GptSharp/book model.");
        if (tok.Shape.Length != 2 || pos.Shape.Length != 2)
            throw new InvalidDataException($"{source.FilePath}: embeddings must be 2-D, got tok_emb {tok.ShapeString} and pos_emb {pos.ShapeString}.");
        int layers = CountBlocks(source.Tensors.Select(t => t.Name), BlockIndex(), source.FilePath);
        int emb = tok.Shape[1];
        return ValidateInferred(new GptConfig
        {
            VocabSize = tok.Shape[0],
            ContextLength = pos.Shape[0],
            EmbeddingDim = emb,
            Heads = heads ?? GuessHeads(emb, source.FilePath),
            Layers = layers,
            QkvBias = source.Find("trf_blocks.0.att.W_query.bias") is not null,
        }, source.FilePath);
    }

    /// <summary><see cref="GptConfig.Validate"/>, with the file named in the message.</summary>
    internal static GptConfig ValidateInferred(GptConfig config, string file)
    {
        try
        {
            return config.Validate();
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{file}: the tensors imply an invalid config: {e.Message}");
        }
    }

    /// <summary>GPT-2's head count for a width (all four sizes use 64-wide heads).</summary>
    public static int GuessHeads(int embeddingDim, string file) => embeddingDim % 64 == 0
        ? embeddingDim / 64
        : throw new InvalidDataException($"{file}: cannot infer the number of attention heads from emb_dim {embeddingDim}; put a config.json (n_heads) next to the file.");

    /// <summary>The block number of a book-named tensor (<c>trf_blocks.N.</c>).</summary>
    [GeneratedRegex(@"^trf_blocks\.(\d+)\.")]
    public static partial Regex BlockIndex();
}
