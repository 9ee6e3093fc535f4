using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using GptSharp.Checkpoints;
using GptSharp.Cli.Commands;
using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Tests.Checkpoints;
using GptSharp.Tests.Model;
using GptSharp.Formats.SafeTensors;

namespace GptSharp.Tests.Interop;

/// <summary>GptSharp → Hugging Face GPT-2 folder → GptSharp, and the folder against one PyTorch/transformers wrote.</summary>
public class HuggingFaceExportTests
{
    /// <summary>Bit for bit (not float equality: -0 and NaN payloads count).</summary>
    internal static void AssertBitIdentical(GptModel expected, GptModel actual)
    {
        Assert.Equal(expected.Config, actual.Config);
        var a = expected.Parameters();
        var b = actual.Parameters();
        Assert.Equal(a.Select(p => p.Name), b.Select(p => p.Name));
        for (int i = 0; i < a.Count; i++)
            Assert.True(MemoryMarshal.AsBytes(a[i].Value.Span).SequenceEqual(MemoryMarshal.AsBytes(b[i].Value.Span)), $"bits of {a[i].Name} differ");
    }

    [Theory]
    [InlineData("tiny-noqkvbias")]
    [InlineData("tiny-qkvbias")]
    public void RoundTripIsBitIdenticalWithAnUntiedHead(string fixture)
    {
        using var dir = new TempDir();
        using var model = new ReferenceFixture(fixture).CreateModel();
        // The book trains out_head apart from tok_emb: make it differ so the folder must carry lm_head.weight.
        model.OutHead.Value.Span[3] += 0.25f;
        string folder = Path.Combine(dir.Path, "hf");
        model.Export(folder, new ExportOptions(ModelFileFormat.HuggingFace));

        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "config.json")))!;
        Assert.Equal("gpt2", (string?)config["model_type"]);
        Assert.Equal("GPT2LMHeadModel", (string?)config["architectures"]![0]);
        Assert.False((bool)config["tie_word_embeddings"]!);
        Assert.Equal(model.Config.QkvBias, (bool)config["qkv_bias"]!);
        Assert.Equal(model.Config.EmbeddingDim, (int)config["n_embd"]!);
        Assert.Equal("gelu_new", (string?)config["activation_function"]);
        Assert.Equal(1e-5, (double)config["layer_norm_epsilon"]!);
        var generation = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "generation_config.json")))!;
        Assert.Equal(50256, (int)generation["eos_token_id"]!);
        foreach (string file in (string[])["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])
            Assert.True(File.Exists(Path.Combine(folder, file)), file);

        using (var weights = SafeTensorsFile.Open(Path.Combine(folder, "model.safetensors")))
        {
            Assert.Equal("pt", weights.Metadata["format"]);
            Assert.Equal(model.OutHead.Value.ToArray(), weights.ReadFloats("lm_head.weight"));
            var cAttnBias = weights.ReadFloats("transformer.h.1.attn.c_attn.bias");
            if (!model.Config.QkvBias) Assert.All(cAttnBias, b => Assert.Equal(0f, b));
        }

        using var loaded = ModelStore.Open(folder);
        Assert.Equal("Hugging Face GPT-2 folder", loaded.Format);
        AssertBitIdentical(model, loaded.Model);
    }

    [Fact]
    public void TiedHeadIsWrittenAsTransformersDoes()
    {
        // tiny-qkvbias-hf/model.safetensors was written by PyTorch from the same weights (tied head): our export of the
        // book-named twin must hold the same tensors under the same names, bit for bit.
        using var dir = new TempDir();
        using var model = new ReferenceFixture("tiny-qkvbias").CreateModel();
        model.Export(dir.Path, new ExportOptions(ModelFileFormat.HuggingFace));
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "config.json")))!;
        Assert.True((bool)config["tie_word_embeddings"]!);
        using var ours = SafeTensorsFile.Open(Path.Combine(dir.Path, "model.safetensors"));
        using var theirs = SafeTensorsFile.Open(FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors"));
        Assert.Null(ours.Find("lm_head.weight"));
        Assert.Equal(theirs.Tensors.Select(t => t.Name).Order(), ours.Tensors.Select(t => t.Name).Order());
        foreach (var t in theirs.Tensors)
        {
            Assert.Equal(t.Shape, ours.Find(t.Name)!.Shape);
            Assert.True(MemoryMarshal.AsBytes(theirs.ReadFloats(t.Name).AsSpan()).SequenceEqual(MemoryMarshal.AsBytes(ours.ReadFloats(t.Name).AsSpan())), t.Name);
        }
        using var back = GptModel.Load(dir.Path);
        AssertBitIdentical(model, back);
    }

    [Fact]
    public void NonZeroQkvBiasWithQkvBiasFalseIsRefused()
    {
        using var dir = new TempDir();
        using (var model = new ReferenceFixture("tiny-qkvbias").CreateModel()) model.Export(dir.Path, new ExportOptions(ModelFileFormat.HuggingFace));
        string configPath = Path.Combine(dir.Path, "config.json");
        var config = (JsonObject)JsonNode.Parse(File.ReadAllText(configPath))!;
        config["qkv_bias"] = false;
        File.WriteAllText(configPath, config.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => ModelStore.Open(dir.Path));
        Assert.Contains("transformer.h.0.attn.c_attn.bias' is not zero but the config says qkv_bias = false", e.Message);
    }

    [Fact]
    public void ConvertToHfThenGenerateFromTheFolder()
    {
        using var dir = new TempDir();
        string input = FixturePaths.Get("reference", "tiny-noqkvbias", "weights.safetensors");
        string folder = Path.Combine(dir.Path, "exported");
        var output = new StringWriter();
        Assert.Equal(0, ConvertCommand.Create(output).Parse([input, folder]).Invoke());
        Assert.Contains("(huggingface)", output.ToString());
        Assert.True(File.Exists(Path.Combine(folder, "model.safetensors")));
        // The folder exists now: converting into it again infers hf from the directory.
        output = new StringWriter();
        Assert.Equal(0, ConvertCommand.Create(output).Parse([folder, Path.Combine(dir.Path, "back.safetensors")]).Invoke());
        Assert.Contains("Hugging Face GPT-2 folder", output.ToString());
        using var original = GptModel.Load(input);
        using var back = GptModel.Load(Path.Combine(dir.Path, "back.safetensors"));
        AssertBitIdentical(original, back);

        output = new StringWriter();
        Assert.Equal(0, InspectCommand.Create(output, plain: true).Parse([folder]).Invoke());
        Assert.Contains("transformer.h.1.attn.c_attn.weight", output.ToString());

        string onnx = Path.Combine(dir.Path, "with-onnx");
        output = new StringWriter();
        Assert.Equal(0, ConvertCommand.Create(output).Parse([input, onnx, "--to", "onnx"]).Invoke());
        Assert.True(File.Exists(Path.Combine(onnx, "onnx", "model.onnx")));
        Assert.True(File.Exists(Path.Combine(onnx, "tokenizer.json")));

        var error = new StringWriter();
        var previous = Console.Error;
        Console.SetError(error);
        try
        {
            Assert.NotEqual(0, ConvertCommand.Create(new StringWriter()).Parse([input, Path.Combine(dir.Path, "q"), "--to", "hf", "--quantize", "int8"]).Invoke());
        }
        finally
        {
            Console.SetError(previous);
        }
        Assert.Contains("Hugging Face folders and ONNX hold float32 weights", error.ToString());
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "q")));
    }
}
