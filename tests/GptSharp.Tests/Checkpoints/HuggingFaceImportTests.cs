using GptSharp.Model;
using static GptSharp.Tests.Checkpoints.CheckpointTestHelpers;
using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Formats.SafeTensors;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Tests.Checkpoints;

public class HuggingFaceImportTests
{
    [Fact]
    public void HfTwinEqualsTheBookNamedWeightsExactly()
    {
        using var hf = Gpt2Import.LoadHuggingFace(FixturePaths.Get("reference", "tiny-qkvbias-hf", "model.safetensors"));
        using var book = ModelFile.Load(FixturePaths.Get("reference", "tiny-qkvbias", "weights.safetensors"));
        Assert.Equal(book.Config, hf.Config);
        // The book fixture's out_head starts equal to tok_emb, so every tensor must match bit for bit.
        AssertSameParameters(book, hf);
    }

    [Fact]
    public void PrefixlessFileWithMaskBuffersLoadsWithTiedHead()
    {
        var config = new GptConfig { VocabSize = 64, ContextLength = 16, EmbeddingDim = 32, Heads = 4, Layers = 2, DropRate = 0f, QkvBias = true };
        string path = FixturePaths.Get("pth", "tiny_gpt2_hf.safetensors");
        using var model = Gpt2Import.LoadHuggingFace(path, config);
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(file.ReadFloats("wte.weight"), model.TokenEmbedding.Value.ToArray());
        Assert.Equal(file.ReadFloats("wte.weight"), model.OutHead.Value.ToArray());
        var cAttn = file.ReadFloats("h.1.attn.c_attn.weight"); // [32, 96]
        var b = model.Blocks[1];
        for (int o = 0; o < 32; o++)
            for (int i = 0; i < 32; i++)
            {
                Assert.Equal(cAttn[i * 96 + o], b.Query.Weight.Value[o, i]);
                Assert.Equal(cAttn[i * 96 + 32 + o], b.Key.Weight.Value[o, i]);
                Assert.Equal(cAttn[i * 96 + 64 + o], b.Value.Weight.Value[o, i]);
            }
        var cFc = file.ReadFloats("h.1.mlp.c_fc.weight"); // [32, 128]
        Assert.Equal(cFc[5 * 128 + 100], b.FeedForwardIn.Weight.Value[100, 5]);
        Assert.Equal(file.ReadFloats("h.1.attn.c_attn.bias")[32..64], b.Key.Bias!.Value.ToArray());
        Assert.Equal(file.ReadFloats("ln_f.weight"), model.FinalNorm.Scale.Value.ToArray());
    }

    [Fact]
    public void ConfigIsInferredWithoutConfigJsonForGpt2Widths()
    {
        using var dir = new TempDir();
        var config = new GptConfig { VocabSize = 40, ContextLength = 8, EmbeddingDim = 128, Heads = 2, Layers = 1, QkvBias = true, DropRate = 0f };
        using var model = RandomModel(config);
        // Export in HF layout (prefixed) through the test's own transposes, then import.
        string path = dir.File("model.safetensors");
        HfExport(model, path);
        using var loaded = Gpt2Import.LoadHuggingFace(path);
        Assert.Equal(config with { DropRate = loaded.Config.DropRate }, loaded.Config);
        Assert.Equal(model.Blocks[0].FeedForwardOut.Weight.Value.ToArray(), loaded.Blocks[0].FeedForwardOut.Weight.Value.ToArray());
        Assert.Equal(model.Blocks[0].Value.Bias!.Value.ToArray(), loaded.Blocks[0].Value.Bias!.Value.ToArray());
    }

    [Fact]
    public void WrongShapeAndMissingTensorAreNamed()
    {
        string path = FixturePaths.Get("pth", "tiny_gpt2_hf.safetensors");
        var config = new GptConfig { VocabSize = 64, ContextLength = 16, EmbeddingDim = 32, Heads = 4, Layers = 2, QkvBias = true };
        var e = Assert.Throws<InvalidDataException>(() => Gpt2Import.LoadHuggingFace(path, config with { ContextLength = 20 }));
        Assert.Contains("shape mismatch for 'wpe.weight': the file has [16, 32], the model expects [20, 32]", e.Message);
        e = Assert.Throws<InvalidDataException>(() => Gpt2Import.LoadHuggingFace(path, config with { Layers = 3 }));
        Assert.Contains("missing tensor 'h.2.ln_1.weight'", e.Message);
        e = Assert.Throws<InvalidDataException>(() => Gpt2Import.LoadHuggingFace(path, config with { Layers = 1 }));
        Assert.Contains("unexpected tensor 'h.1.", e.Message);
        // A model without qkv biases takes only a zero c_attn.bias (what GptSharp's own export writes for one).
        e = Assert.Throws<InvalidDataException>(() => Gpt2Import.LoadHuggingFace(path, config with { QkvBias = false }));
        Assert.Contains("'h.0.attn.c_attn.bias' is not zero", e.Message);
    }

    private static void HfExport(GptModel model, string path)
    {
        int e = model.Config.EmbeddingDim;
        var tensors = new List<(string, GptSharp.Tensors.Tensor)>();
        GptSharp.Tensors.Tensor T(GptSharp.Tensors.Tensor w) // [out, in] -> [in, out]
        {
            int o = w.Size(0), i = w.Size(1);
            var t = new GptSharp.Tensors.Tensor(i, o);
            for (int r = 0; r < o; r++) for (int c = 0; c < i; c++) t[c, r] = w[r, c];
            return t;
        }
        tensors.Add(("transformer.wte.weight", model.TokenEmbedding.Value));
        tensors.Add(("transformer.wpe.weight", model.PositionEmbedding.Value));
        for (int l = 0; l < model.Config.Layers; l++)
        {
            var b = model.Blocks[l];
            string p = $"transformer.h.{l}.";
            var qkv = new GptSharp.Tensors.Tensor(e, 3 * e);
            var bias = new GptSharp.Tensors.Tensor(3 * e);
            var parts = new[] { b.Query, b.Key, b.Value };
            for (int k = 0; k < 3; k++)
            {
                for (int r = 0; r < e; r++) for (int c = 0; c < e; c++) qkv[c, k * e + r] = parts[k].Weight.Value[r, c];
                parts[k].Bias!.Value.Span.CopyTo(bias.Span.Slice(k * e, e));
            }
            tensors.Add((p + "attn.c_attn.weight", qkv));
            tensors.Add((p + "attn.c_attn.bias", bias));
            tensors.Add((p + "attn.bias", new GptSharp.Tensors.Tensor(1, 1, 8, 8)));
            tensors.Add((p + "attn.masked_bias", new GptSharp.Tensors.Tensor()));
            tensors.Add((p + "attn.c_proj.weight", T(b.OutProj.Weight.Value)));
            tensors.Add((p + "attn.c_proj.bias", b.OutProj.Bias!.Value));
            tensors.Add((p + "mlp.c_fc.weight", T(b.FeedForwardIn.Weight.Value)));
            tensors.Add((p + "mlp.c_fc.bias", b.FeedForwardIn.Bias!.Value));
            tensors.Add((p + "mlp.c_proj.weight", T(b.FeedForwardOut.Weight.Value)));
            tensors.Add((p + "mlp.c_proj.bias", b.FeedForwardOut.Bias!.Value));
            tensors.Add((p + "ln_1.weight", b.Norm1.Scale.Value));
            tensors.Add((p + "ln_1.bias", b.Norm1.Shift.Value));
            tensors.Add((p + "ln_2.weight", b.Norm2.Scale.Value));
            tensors.Add((p + "ln_2.bias", b.Norm2.Shift.Value));
        }
        tensors.Add(("transformer.ln_f.weight", model.FinalNorm.Scale.Value));
        tensors.Add(("transformer.ln_f.bias", model.FinalNorm.Shift.Value));
        SafeTensorsWriter.Write(path, tensors.Select(t => SafeTensorsEntry.Float32(t.Item1, t.Item2)));
    }
}
