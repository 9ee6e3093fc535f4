using System.Buffers;
using System.Runtime.InteropServices;
using GptSharp.Formats.Gguf;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Layers;

namespace GptSharp.Checkpoints;

/// <summary>
/// The book's model as a GGUF file of architecture <c>gpt2</c>, laid out as llama.cpp's <c>convert_hf_to_gguf.py</c> writes
/// GPT-2 (so llama.cpp and everything built on it runs it), and any such file read back into a <see cref="GptModel"/>.
/// <list type="bullet">
/// <item>Names: <c>token_embd</c>, <c>position_embd</c>, <c>blk.N.attn_norm</c>, <c>attn_qkv</c> (query, key and value rows
/// stacked), <c>attn_output</c>, <c>ffn_norm</c>, <c>ffn_up</c>, <c>ffn_down</c>, <c>output_norm</c>, <c>output</c>. A linear
/// weight [out, in] is stored row-major with ggml dimensions [in, out]: the same bytes as nn.Linear's.</item>
/// <item>Where the book's model differs from OpenAI's GPT-2: the untied head is written as <c>output.weight</c> (llama.cpp uses
/// it instead of <c>token_embd</c>); without <c>qkv_bias</c>, <c>attn_qkv.bias</c> is written as zeros (llama.cpp's gpt2 loader
/// requires it); the context length is the model's. <c>gptsharp.config</c> keeps the book's config (drop rate, qkv_bias) for
/// an exact round trip; llama.cpp ignores it.</item>
/// <item>Types as convert_hf_to_gguf.py chooses them: 1-D tensors and <c>position_embd</c> float32, the other matrices the
/// requested type; q8_0 needs rows that are whole blocks of 32, else that matrix is written f16.</item>
/// </list>
/// </summary>
internal static class GgufModel
{
    public const string Architecture = "gpt2";

    /// <summary>Metadata key of the book's config JSON (GptSharp's own; other readers ignore it).</summary>
    public const string ConfigKey = "gptsharp.config";

    private static string Key(string name) => $"{Architecture}.{name}";

    // ---------------------------------------------------------------- writing

    public static void Write(GptModel model, string path, ExportDType dtype)
    {
        var config = model.Config;
        var tensors = new List<GgufTensorOut>();
        GgmlType matrixType = dtype switch
        {
            ExportDType.Float32 => GgmlType.F32,
            ExportDType.Float16 => GgmlType.F16,
            ExportDType.Q8_0 => GgmlType.Q8_0,
            _ => throw new ArgumentOutOfRangeException(nameof(dtype)),
        };
        GgmlType MatrixType(long rowLength) => matrixType == GgmlType.Q8_0 && rowLength % 32 != 0 ? GgmlType.F16 : matrixType;

        void Matrix(string name, params Parameter[] parts)
        {
            int columns = parts[0].Value.Size(1);
            long rows = parts.Sum(p => (long)p.Value.Size(0));
            tensors.Add(new GgufTensorOut(name, [columns, rows], MatrixType(columns), Rows(parts)));
        }
        void Vector(string name, params Parameter?[] parts)
        {
            long length = parts.Sum(p => (long)(p?.Value.Length ?? config.EmbeddingDim));
            tensors.Add(new GgufTensorOut(name, [length], GgmlType.F32, VectorRows(parts, config.EmbeddingDim)));
        }

        Matrix("token_embd.weight", model.TokenEmbedding);
        var pos = model.PositionEmbedding;
        tensors.Add(new GgufTensorOut("position_embd.weight", [pos.Value.Size(1), pos.Value.Size(0)], GgmlType.F32, Rows([pos])));
        for (int i = 0; i < config.Layers; i++)
        {
            var b = model.Blocks[i];
            string p = $"blk.{i}.";
            Vector(p + "attn_norm.weight", b.Norm1.Scale);
            Vector(p + "attn_norm.bias", b.Norm1.Shift);
            Matrix(p + "attn_qkv.weight", b.Query.Weight, b.Key.Weight, b.Value.Weight);
            // Null parts (no qkv_bias) are written as zeros.
            Vector(p + "attn_qkv.bias", b.Query.Bias, b.Key.Bias, b.Value.Bias);
            Matrix(p + "attn_output.weight", b.OutProj.Weight);
            Vector(p + "attn_output.bias", b.OutProj.Bias);
            Vector(p + "ffn_norm.weight", b.Norm2.Scale);
            Vector(p + "ffn_norm.bias", b.Norm2.Shift);
            Matrix(p + "ffn_up.weight", b.FeedForwardIn.Weight);
            Vector(p + "ffn_up.bias", b.FeedForwardIn.Bias);
            Matrix(p + "ffn_down.weight", b.FeedForwardOut.Weight);
            Vector(p + "ffn_down.bias", b.FeedForwardOut.Bias);
        }
        Vector("output_norm.weight", model.FinalNorm.Scale);
        Vector("output_norm.bias", model.FinalNorm.Shift);
        Matrix("output.weight", model.OutHead);

        var fileType = tensors.Any(t => t.Type == GgmlType.Q8_0) ? 7u : tensors.Any(t => t.Type == GgmlType.F16) ? 1u : 0u;
        GgufWriter.Write(path, Metadata(config, fileType, Path.GetFileNameWithoutExtension(path)), tensors);
    }

    /// <summary>The key/values convert_hf_to_gguf.py writes for GPT-2, in its order, then GptSharp's config.</summary>
    private static List<KeyValuePair<string, object>> Metadata(GptConfig config, uint fileType, string name)
    {
        var vocabulary = Gpt2Tokenizer.Instance.Vocabulary;
        int known = Math.Min(config.VocabSize, Gpt2Vocabulary.VocabSize);
        // The token list has exactly vocab_size entries (llama.cpp checks it against token_embd): GPT-2's tokens, cut
        // short for a smaller vocabulary, padded as convert_hf_to_gguf.py pads (unused [PADn] tokens) for a larger one.
        var tokens = new string[config.VocabSize];
        var types = new int[config.VocabSize];
        for (int id = 0; id < config.VocabSize; id++)
        {
            tokens[id] = id < known ? vocabulary.ByteLevelToken(id) : $"[PAD{id}]";
            types[id] = id >= known ? TokenTypeUnused : id == Gpt2Vocabulary.EndOfTextId ? TokenTypeControl : TokenTypeNormal;
        }
        // Merge n makes token 256 + n: a smaller vocabulary keeps the merges whose result it has.
        var merges = Gpt2Vocabulary.MergeLines().Take(Math.Max(0, Math.Min(known, Gpt2Vocabulary.EndOfTextId) - 256)).ToArray();

        var kv = new List<KeyValuePair<string, object>>
        {
            new("general.architecture", Architecture),
            new("general.type", "model"),
            new("general.name", name),
            new(Key("block_count"), (uint)config.Layers),
            new(Key("context_length"), (uint)config.ContextLength),
            new(Key("embedding_length"), (uint)config.EmbeddingDim),
            new(Key("feed_forward_length"), (uint)config.HiddenDim),
            new(Key("attention.head_count"), (uint)config.Heads),
            new(Key("attention.layer_norm_epsilon"), Kernels.LayerNormEps),
            new("general.file_type", fileType),
            new("general.quantization_version", 2u),
            new("tokenizer.ggml.model", "gpt2"),
            new("tokenizer.ggml.pre", "gpt-2"),
            new("tokenizer.ggml.tokens", tokens),
            new("tokenizer.ggml.token_type", types),
            new("tokenizer.ggml.merges", merges),
        };
        if (Gpt2Vocabulary.EndOfTextId < config.VocabSize)
        {
            kv.Add(new("tokenizer.ggml.bos_token_id", (uint)Gpt2Vocabulary.EndOfTextId));
            kv.Add(new("tokenizer.ggml.eos_token_id", (uint)Gpt2Vocabulary.EndOfTextId));
            kv.Add(new("tokenizer.ggml.unknown_token_id", (uint)Gpt2Vocabulary.EndOfTextId));
        }
        // GptSharp never puts <|endoftext|> before a prompt; say so, so that llama.cpp's tools don't either.
        kv.Add(new("tokenizer.ggml.add_bos_token", false));
        kv.Add(new("general.alignment", (uint)GgufFile.DefaultAlignment));
        kv.Add(new(ConfigKey, config.ToJson()));
        return kv;
    }

    // llama.cpp's token types (llama_token_type / gguf-py TokenType).
    private const int TokenTypeNormal = 1, TokenTypeControl = 3, TokenTypeUnused = 5;

    /// <summary>Rows of the stacked matrices <paramref name="parts"/> (each [rows, columns]; int8 weights are dequantized).</summary>
    private static unsafe GgufRowSource Rows(Parameter[] parts) => (firstRow, destination) =>
    {
        int columns = parts[0].Value.Size(1);
        long row = firstRow;
        int filled = 0;
        foreach (var p in parts)
        {
            int rows = p.Value.Size(0);
            if (row >= rows)
            {
                row -= rows;
                continue;
            }
            int take = Math.Min(rows - (int)row, (destination.Length - filled) / columns);
            if (take <= 0) break;
            var target = destination.Slice(filled, take * columns);
            if (p.Int8 is { } q)
                fixed (float* d = target) q.DequantizeRows((int)row, take, d);
            else
                p.Value.Span.Slice((int)row * columns, take * columns).CopyTo(target);
            filled += take * columns;
            row = 0;
        }
    };

    private static GgufRowSource VectorRows(Parameter?[] parts, int missingLength) => (_, destination) =>
    {
        int at = 0;
        foreach (var p in parts)
        {
            if (p is null) destination.Slice(at, missingLength).Clear();
            else p.Value.Span.CopyTo(destination[at..]);
            at += p is null ? missingLength : (int)p.Value.Length;
        }
    };

    // ---------------------------------------------------------------- reading

    /// <summary>
    /// Builds the model a GGUF file of architecture gpt2 holds. The config comes from its <c>gpt2.*</c> keys (and
    /// <c>gptsharp.config</c> when GptSharp wrote it), checked against every tensor's shape before the model is allocated.
    /// Each tensor is converted to float32 (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K); a q8_0 linear
    /// weight loads straight into an <see cref="Int8Matrix"/> when the model quantizes while loading (same blocks of 32,
    /// the fp16 scale widened exactly to float32). Without <c>output.weight</c> (OpenAI's GPT-2) the head is tied to the embedding.
    /// </summary>
    public static GptModel Load(string path, GptConfig? config = null, bool quantize = false)
    {
        using var file = GgufFile.Open(path);
        config ??= ConfigFor(file);
        CheckTensors(file, config);
        StateDictLoader.CheckConfigFitsFile(config, path, file.Tensors.Sum(t => t.Elements));
        return StateDictLoader.NewModel(config, model => LoadInto(model, file), quantize);
    }

    private static InvalidDataException Bad(GgufFile file, string what) => new($"{file.FilePath}: {what}");

    /// <summary>The config a gpt2 GGUF describes; every key llama.cpp needs must be there and agree with GptSharp's model.</summary>
    internal static GptConfig ConfigFor(GgufFile file)
    {
        string? arch = file.GetString("general.architecture");
        if (arch is null) throw Bad(file, "GGUF without general.architecture: cannot tell what model it holds.");
        if (arch != Architecture)
            throw Bad(file, $"GGUF of architecture '{GgufFile.Printable(arch)}': GptSharp runs GPT-2 models only (architecture gpt2).");
        string? tokenizer = file.GetString("tokenizer.ggml.model");
        if (tokenizer is not null && tokenizer != "gpt2")
            throw Bad(file, $"its tokenizer is '{GgufFile.Printable(tokenizer)}', but GptSharp tokenizes with GPT-2's byte-level BPE (tokenizer.ggml.model = gpt2).");
        CheckVocabulary(file);

        int Required(string key)
        {
            long? v = file.GetInteger(Key(key));
            if (v is null) throw Bad(file, $"missing or non-integer metadata '{Key(key)}'.");
            if (v is <= 0 or > int.MaxValue) throw Bad(file, $"metadata '{Key(key)}' = {v} is out of range.");
            return (int)v.Value;
        }
        int emb = Required("embedding_length"), layers = Required("block_count"), heads = Required("attention.head_count"), context = Required("context_length");
        long? ff = file.GetInteger(Key("feed_forward_length"));
        if (ff is not null && ff != 4L * emb)
            throw Bad(file, $"feed_forward_length {ff} is not 4 × embedding_length ({4L * emb}): GptSharp's model has GPT-2's 4× feed-forward.");
        double? eps = file.GetFloat(Key("attention.layer_norm_epsilon"));
        if (eps is not null && Math.Abs(eps.Value - Kernels.LayerNormEps) > 1e-9)
            throw Bad(file, $"layer_norm_epsilon {eps} differs from GptSharp's LayerNorm epsilon {Kernels.LayerNormEps}.");
        if (file.GetInteger(Key("attention.head_count_kv")) is { } kvHeads && kvHeads != heads)
            throw Bad(file, $"head_count_kv {kvHeads} differs from head_count {heads}: GptSharp's attention has no grouped keys/values.");
        var tokenEmbedding = file.Find("token_embd.weight") ?? throw Bad(file, "no tensor 'token_embd.weight'.");
        if (tokenEmbedding.Dims.Length != 2 || tokenEmbedding.Dims[1] > int.MaxValue)
            throw Bad(file, $"token_embd.weight has dimensions {tokenEmbedding.DimsString}, expected [{emb}, vocab].");

        var inferred = new GptConfig
        {
            VocabSize = (int)tokenEmbedding.Dims[1],
            ContextLength = context,
            EmbeddingDim = emb,
            Heads = heads,
            Layers = layers,
            QkvBias = HasQkvBias(file, layers),
        };
        if (file.GetString(ConfigKey) is { } json)
        {
            // GptSharp's own record of the config: kept only where it agrees with what llama.cpp reads.
            var book = GptConfig.FromJson(json, file.FilePath + " (" + ConfigKey + ")");
            if (book with { DropRate = inferred.DropRate, QkvBias = inferred.QkvBias } != inferred || (inferred.QkvBias && !book.QkvBias))
                throw Bad(file, $"{ConfigKey} ({json}) disagrees with the file's gpt2 keys and tensors.");
            inferred = book;
        }
        return StateDictLoader.ValidateInferred(inferred, file.FilePath);
    }

    /// <summary>The token list, when there is one, must be GPT-2's (GptSharp's tokenizer is GPT-2's).</summary>
    private static void CheckVocabulary(GgufFile file)
    {
        if (file.Metadata.GetValueOrDefault("tokenizer.ggml.tokens") is not string[] tokens) return;
        var vocabulary = Gpt2Tokenizer.Instance.Vocabulary;
        for (int id = 0; id < Math.Min(tokens.Length, Gpt2Vocabulary.VocabSize); id++)
        {
            string ours = vocabulary.ByteLevelToken(id);
            if (tokens[id] != ours)
                throw Bad(file, $"its vocabulary is not GPT-2's (token {id} is '{GgufFile.Printable(tokens[id])}', GPT-2's is '{ours}'): GptSharp tokenizes with GPT-2's BPE only.");
        }
    }

    /// <summary>True when some block's <c>attn_qkv.bias</c> is not all zeros (GptSharp writes zeros for a model without qkv_bias).</summary>
    private static bool HasQkvBias(GgufFile file, int layers)
    {
        for (int i = 0; i < layers; i++)
        {
            var t = file.Find($"blk.{i}.attn_qkv.bias");
            if (t is null || t.Dims.Length != 1 || t.Elements > 1 << 24) continue;
            var values = new float[t.Elements];
            file.ReadRows(t, 0, values);
            if (values.Any(v => v != 0f)) return true;
        }
        return false;
    }

    /// <summary>Every tensor's name and dimensions against the config, before anything is allocated.</summary>
    private static void CheckTensors(GgufFile file, GptConfig config)
    {
        var expected = ExpectedTensors(config).ToDictionary(t => t.Name, t => t.Dims, StringComparer.Ordinal);
        foreach (var t in file.Tensors)
            if (!expected.ContainsKey(t.Name))
                throw Bad(file, $"unexpected tensor '{GgufFile.Printable(t.Name)}' {t.DimsString}: not part of a GPT-2 model with {config.Layers} layers.");
        foreach (var (name, dims) in expected)
        {
            var t = file.Find(name);
            if (t is null)
            {
                if (name == "output.weight") continue; // tied to token_embd
                if (name.EndsWith("attn_qkv.bias", StringComparison.Ordinal) && !config.QkvBias) continue;
                throw Bad(file, $"missing tensor '{name}' (expected dimensions [{string.Join(", ", dims)}]).");
            }
            if (!t.Dims.AsSpan().SequenceEqual(dims))
                throw Bad(file, $"tensor '{name}' has dimensions {t.DimsString}, the config needs [{string.Join(", ", dims)}].");
            if (!GgmlTypes.CanDequantize(t.Type))
                throw Bad(file, $"tensor '{name}' is {GgmlTypes.Name(t.Type)}, which GptSharp cannot read (it reads {GgmlTypes.ReadableTypes}).");
        }
    }

    private static IEnumerable<(string Name, long[] Dims)> ExpectedTensors(GptConfig c)
    {
        long e = c.EmbeddingDim, h = c.HiddenDim;
        yield return ("token_embd.weight", [e, c.VocabSize]);
        yield return ("position_embd.weight", [e, c.ContextLength]);
        for (int i = 0; i < c.Layers; i++)
        {
            string p = $"blk.{i}.";
            yield return (p + "attn_norm.weight", [e]);
            yield return (p + "attn_norm.bias", [e]);
            yield return (p + "attn_qkv.weight", [e, 3 * e]);
            yield return (p + "attn_qkv.bias", [3 * e]);
            yield return (p + "attn_output.weight", [e, e]);
            yield return (p + "attn_output.bias", [e]);
            yield return (p + "ffn_norm.weight", [e]);
            yield return (p + "ffn_norm.bias", [e]);
            yield return (p + "ffn_up.weight", [e, h]);
            yield return (p + "ffn_up.bias", [h]);
            yield return (p + "ffn_down.weight", [h, e]);
            yield return (p + "ffn_down.bias", [e]);
        }
        yield return ("output_norm.weight", [e]);
        yield return ("output_norm.bias", [e]);
        yield return ("output.weight", [e, c.VocabSize]);
    }

    private static void LoadInto(GptModel model, GgufFile file)
    {
        var config = model.Config;
        int e = config.EmbeddingDim;
        Read(model, file, "token_embd.weight", 0, model.TokenEmbedding);
        Read(model, file, "position_embd.weight", 0, model.PositionEmbedding);
        for (int i = 0; i < config.Layers; i++)
        {
            var b = model.Blocks[i];
            string p = $"blk.{i}.";
            Read(model, file, p + "attn_norm.weight", 0, b.Norm1.Scale);
            Read(model, file, p + "attn_norm.bias", 0, b.Norm1.Shift);
            Read(model, file, p + "attn_qkv.weight", 0, b.Query.Weight);
            Read(model, file, p + "attn_qkv.weight", e, b.Key.Weight);
            Read(model, file, p + "attn_qkv.weight", 2 * e, b.Value.Weight);
            if (config.QkvBias)
            {
                ReadSlice(file, p + "attn_qkv.bias", 0, b.Query.Bias!);
                ReadSlice(file, p + "attn_qkv.bias", e, b.Key.Bias!);
                ReadSlice(file, p + "attn_qkv.bias", 2 * e, b.Value.Bias!);
            }
            Read(model, file, p + "attn_output.weight", 0, b.OutProj.Weight);
            Read(model, file, p + "attn_output.bias", 0, b.OutProj.Bias!);
            Read(model, file, p + "ffn_norm.weight", 0, b.Norm2.Scale);
            Read(model, file, p + "ffn_norm.bias", 0, b.Norm2.Shift);
            Read(model, file, p + "ffn_up.weight", 0, b.FeedForwardIn.Weight);
            Read(model, file, p + "ffn_up.bias", 0, b.FeedForwardIn.Bias!);
            Read(model, file, p + "ffn_down.weight", 0, b.FeedForwardOut.Weight);
            Read(model, file, p + "ffn_down.bias", 0, b.FeedForwardOut.Bias!);
        }
        Read(model, file, "output_norm.weight", 0, model.FinalNorm.Scale);
        Read(model, file, "output_norm.bias", 0, model.FinalNorm.Shift);
        if (file.Find("output.weight") is not null) Read(model, file, "output.weight", 0, model.OutHead);
        else QuantizeFileValues(file, "token_embd.weight", model.TieOutHeadToTokenEmbedding);
    }

    /// <summary>
    /// Fills <paramref name="p"/> from the rows of tensor <paramref name="name"/> starting at <paramref name="firstRow"/>
    /// (a 1-D tensor is one row per element here: its slice). A q8_0 linear weight of a model that quantizes while
    /// loading becomes int8 directly, its blocks copied and scales widened, never passing through float32.
    /// </summary>
    private static void Read(GptModel model, GgufFile file, string name, int firstRow, Parameter p)
    {
        var t = file.Find(name)!;
        if (t.Dims.Length == 1)
        {
            ReadSlice(file, name, firstRow, p);
            return;
        }
        if (model.QuantizeWhileLoading && t.Type == GgmlType.Q8_0 && model.LinearWeights().Contains(p))
        {
            model.UseInt8(p, ReadQ8_0(file, t, firstRow, p.Value.Size(0)));
            return;
        }
        file.ReadRows(t, firstRow, p.Value.Span);
        QuantizeFileValues(file, name, () => model.WeightLoaded(p));
    }

    /// <summary>Quantizing while loading refuses NaN and infinite weights: from a file, that is a bad file.</summary>
    private static void QuantizeFileValues(GgufFile file, string name, Action quantize)
    {
        try
        {
            quantize();
        }
        catch (ArgumentException e)
        {
            throw Bad(file, $"tensor '{name}': {e.Message}");
        }
    }

    /// <summary>Elements [<paramref name="first"/>, + p.Length) of a 1-D tensor.</summary>
    private static void ReadSlice(GgufFile file, string name, int first, Parameter p)
    {
        var t = file.Find(name)!;
        if (first == 0 && t.Elements == p.Length)
        {
            file.ReadRows(t, 0, p.Value.Span);
            return;
        }
        var all = ArrayPool<float>.Shared.Rent(checked((int)t.Elements));
        try
        {
            file.ReadRows(t, 0, all.AsSpan(0, (int)t.Elements));
            all.AsSpan(first, (int)p.Length).CopyTo(p.Value.Span);
        }
        finally
        {
            ArrayPool<float>.Shared.Return(all);
        }
    }

    /// <summary>q8_0 rows → <see cref="Int8Matrix"/>: the same block of 32 int8 values, the fp16 scale widened (exactly) to float32.</summary>
    private static unsafe Int8Matrix ReadQ8_0(GgufFile file, GgufTensorInfo t, int firstRow, int rows)
    {
        int columns = (int)t.RowLength, blocks = columns / 32;
        var matrix = new Int8Matrix(rows, columns);
        try
        {
            int rowBytes = (int)t.RowBytes;
            int perChunk = Math.Max(1, (4 << 20) / rowBytes);
            byte[] raw = ArrayPool<byte>.Shared.Rent(Math.Min(perChunk, rows) * rowBytes);
            try
            {
                for (int done = 0; done < rows; done += perChunk)
                {
                    int n = Math.Min(perChunk, rows - done);
                    file.ReadRowBytes(t, firstRow + done, raw.AsSpan(0, n * rowBytes));
                    for (int r = 0; r < n; r++)
                    {
                        sbyte* values = matrix.Values + (long)(done + r) * columns;
                        float* scales = matrix.Scales + (long)(done + r) * blocks;
                        var row = raw.AsSpan(r * rowBytes, rowBytes);
                        for (int b = 0; b < blocks; b++)
                        {
                            var block = row.Slice(34 * b, 34);
                            var target = new Span<sbyte>(values + 32 * b, 32);
                            MemoryMarshal.Cast<byte, sbyte>(block.Slice(2, 32)).CopyTo(target);
                            // −128 is a legal q8_0 value (ggml's own quantizer never writes it) but outside GptSharp's
                            // symmetric [−127, 127], which its kernels rely on: clamped, one step at most.
                            if (block.Slice(2, 32).Contains((byte)0x80))
                                foreach (ref sbyte v in target) v = Math.Max(v, (sbyte)-127);
                            float scale = (float)System.Buffers.Binary.BinaryPrimitives.ReadHalfLittleEndian(block);
                            if (!float.IsFinite(scale)) throw Bad(file, $"tensor '{t.Name}' has a non-finite q8_0 scale ({scale}).");
                            if (scale < 0)
                            {
                                // GptSharp's scales are non-negative; a negative fp16 d only flips the block's signs.
                                foreach (ref sbyte v in target) v = (sbyte)-v;
                                scale = -scale;
                            }
                            scales[b] = scale;
                        }
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(raw);
            }
            return matrix;
        }
        catch
        {
            matrix.Dispose();
            throw;
        }
    }
}
