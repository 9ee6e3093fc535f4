using System.Text.Json;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Formats;
using GptSharp.Formats.SafeTensors;
using GptSharp.Data;

namespace GptSharp.Tests.Model;

/// <summary>One book-named PyTorch fixture from Fixtures/reference (see its README.md).</summary>
internal sealed class ReferenceFixture
{
    public static readonly string[] BookNamed = ["tiny-noqkvbias", "tiny-qkvbias"];

    public ReferenceFixture(string name)
    {
        Name = name;
        using var config = JsonDocument.Parse(File.ReadAllText(FixturePaths.Get("reference", name, "config.json")));
        var root = config.RootElement;
        Config = new GptConfig
        {
            VocabSize = root.GetProperty("vocab_size").GetInt32(),
            ContextLength = root.GetProperty("context_length").GetInt32(),
            EmbeddingDim = root.GetProperty("emb_dim").GetInt32(),
            Heads = root.GetProperty("n_heads").GetInt32(),
            Layers = root.GetProperty("n_layers").GetInt32(),
            DropRate = root.GetProperty("drop_rate").GetSingle(),
            QkvBias = root.GetProperty("qkv_bias").GetBoolean(),
        };
        Weights = Open("weights.safetensors");
        Io = Open("io.safetensors");
        var shape = Io.Shape("inputs");
        Inputs = new TokenBatch(Io.Ints("inputs"), shape[0], shape[1]);
        Targets = new TokenBatch(Io.Ints("targets"), shape[0], shape[1]);
    }

    public string Name { get; }
    public GptConfig Config { get; }
    public SafeTensorsFile Weights { get; }
    public SafeTensorsFile Io { get; }
    public TokenBatch Inputs { get; }
    public TokenBatch Targets { get; }

    public SafeTensorsFile Open(string file) => SafeTensorsFile.Open(FixturePaths.Get("reference", Name, file));

    /// <summary>A model holding the fixture's weights (every parameter must be in the file, and nothing else).</summary>
    public GptModel CreateModel()
    {
        var model = new GptModel(Config);
        var names = model.Parameters().Select(p => p.Name).ToHashSet();
        Assert.Equal(names.OrderBy(n => n), Weights.Tensors.Select(t => t.Name).OrderBy(n => n));
        foreach (var p in model.Parameters())
        {
            Assert.Equal(p.Value.ShapeArray, Weights.Shape(p.Name));
            Weights.Floats(p.Name).CopyTo(p.Value.Span);
        }
        return model;
    }

    public static float MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        Assert.Equal(a.Length, b.Length);
        float max = 0;
        for (int i = 0; i < a.Length; i++) max = Math.Max(max, Math.Abs(a[i] - b[i]));
        return max;
    }

    public static float MaxAbs(ReadOnlySpan<float> a)
    {
        float max = 0;
        foreach (float x in a) max = Math.Max(max, Math.Abs(x));
        return max;
    }
}

/// <summary>The fixtures' tensors through the library's safetensors reader, with the fixtures' dtypes asserted.</summary>
internal static class FixtureTensors
{
    public static int[] Shape(this SafeTensorsFile file, string name) =>
        (file.Find(name) ?? throw new Xunit.Sdk.XunitException($"{file.FilePath}: no tensor '{name}'")).Shape;

    /// <summary>A float32 tensor (the fixtures store every float as F32).</summary>
    public static float[] Floats(this SafeTensorsFile file, string name)
    {
        Assert.Equal(TensorDType.F32, file.Find(name)?.DType);
        return file.ReadFloats(name);
    }

    /// <summary>An int64 tensor (token ids) as ints; every value must fit.</summary>
    public static int[] Ints(this SafeTensorsFile file, string name)
    {
        Assert.Equal(TensorDType.I64, file.Find(name)?.DType);
        return file.ReadInt64(name).Select(v => checked((int)v)).ToArray();
    }
}
