using System.Text.RegularExpressions;
using GptSharp.Tensors;
using GptSharp.Formats;
using GptSharp.Pretrained;
using GptSharp.Formats.SafeTensors;
using GptSharp.Data;
using GptSharp.Checkpoints.Gpt2;

namespace GptSharp.Tests.Checkpoints.TensorFlow;

/// <summary>
/// An independent check of the OpenAI mapping (c_attn split, Conv1D transposes, tied head): the PyTorch
/// reference model's Hugging Face twin (`reference/tiny-qkvbias-hf`, Conv1D layout like OpenAI's TF
/// checkpoint) is renamed tensor for tensor into OpenAI's TF names — Hugging Face's own TF→PyTorch
/// conversion is exactly this rename — written as a TF bundle, loaded, and must give PyTorch's logits.
/// </summary>
public partial class Gpt2TensorFlowImportReferenceTests
{
    [GeneratedRegex(@"^(?:transformer\.)?(?:h\.(\d+)\.)?(.+)$")]
    private static partial Regex HfName();

    [Fact]
    public void HuggingFaceTwinAsATensorFlowCheckpointGivesPyTorchsLogits()
    {
        string fixture = FixturePaths.Get("reference", "tiny-qkvbias-hf");
        using var hf = SafeTensorsFile.Open(Path.Combine(fixture, "model.safetensors"));
        var tensors = new Dictionary<string, (long[], float[])>();
        foreach (var t in hf.Tensors)
        {
            var m = HfName().Match(t.Name);
            string layer = m.Groups[1].Success ? $"h{m.Groups[1].Value}/" : "";
            string rest = m.Groups[2].Value;
            if (rest is "attn.bias" or "attn.masked_bias" || rest.StartsWith("lm_head", StringComparison.Ordinal)) continue;
            bool conv1D = rest.EndsWith(".weight", StringComparison.Ordinal) && (rest.StartsWith("attn.", StringComparison.Ordinal) || rest.StartsWith("mlp.", StringComparison.Ordinal));
            string name = "model/" + layer + rest switch
            {
                "wte.weight" => "wte",
                "wpe.weight" => "wpe",
                _ when conv1D => rest[..^".weight".Length].Replace('.', '/') + "/w",
                _ when rest.EndsWith(".weight", StringComparison.Ordinal) => rest[..^".weight".Length].Replace('.', '/') + "/g", // LayerNorm gain
                _ => rest[..^".bias".Length].Replace('.', '/') + "/b",
            };
            long[] shape = [.. (conv1D ? new long[] { 1 } : []), .. t.Shape.Select(d => (long)d)];
            tensors[name] = (shape, hf.ReadFloats(t.Name));
        }
        Assert.Equal(4 + 12 * 3, tensors.Count);

        string dir = Path.Combine(Path.GetTempPath(), "gptsharp-tfref-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            TfBundleWriter.Write(Path.Combine(dir, "model.ckpt"), tensors);
            File.WriteAllText(Path.Combine(dir, "hparams.json"), """{"n_vocab": 1000, "n_ctx": 24, "n_embd": 48, "n_head": 3, "n_layer": 3}""");
            using var model = Gpt2TensorFlowImport.Load(dir);

            using var io = SafeTensorsFile.Open(Path.Combine(fixture, "io.safetensors"));
            var shape = io.Find("inputs")!.Shape;
            var inputs = new TokenBatch(io.ReadInt64("inputs").Select(x => checked((int)x)).ToArray(), shape[0], shape[1]);
            var expected = io.ReadFloats("logits");
            model.Eval();
            using var _ = model.NoGrad();
            var logits = model.Forward(inputs).Span;
            Assert.Equal(expected.Length, logits.Length);
            float worst = 0;
            for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - logits[i]));
            Assert.True(worst <= 1e-4f, $"logits differ from PyTorch's by {worst}");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
