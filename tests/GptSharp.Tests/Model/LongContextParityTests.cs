using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tests.Tensors;
using GptSharp.Training;
using Xunit.Abstractions;
using Path = GptSharp.Tensors.Gemm.KernelPath;
using GptSharp.Formats.SafeTensors;
using GptSharp.Layers;
using GptSharp.Randomness;

namespace GptSharp.Tests.Model;

/// <summary>
/// Parity with PyTorch 1.13 at a context of 300 (ten query blocks of the fused attention, the last one short), from
/// bench/pytorch/long_context_fixtures.py: the attention core with and without a fixed dropout mask on every vector
/// width, and a small GPTModel's logits, loss and gradients in eval mode and with dropout drawn by the torch generator,
/// through the chunked loss pass.
/// </summary>
public unsafe class LongContextParityTests(ITestOutputHelper output)
{
    [Theory]
    [MemberData(nameof(GemmTests.Paths), MemberType = typeof(GemmTests))]
    public void AttentionCoreMatchesPyTorch(string pathName)
    {
        var path = Enum.Parse<Path>(pathName);
        using var io = SafeTensorsFile.Open(FixturePaths.Get("reference", "attention-t300", "io.safetensors"));
        int[] shape = io.Shape("q");
        int batch = shape[0], seq = shape[1], c = shape[2], heads = io.Shape("keep")[1];
        float[] q = io.Floats("q"), k = io.Floats("k"), v = io.Floats("v"), dContext = io.Floats("dcontext");
        float[] keep = io.ReadFloats("keep"); // U8 [batch, heads, seq, seq]: 1 kept
        int headRows = batch * heads * seq, words = Kernels.DropoutBitWords(seq);
        var bits = new uint[headRows * words];
        for (int r = 0; r < headRows; r++)
            for (int j = 0; j < seq; j++)
                if (keep[(long)r * seq + j] != 0) bits[r * words + (j >> 5)] |= 1u << (j & 31);
        float scale = Kernels.DropoutScale(0.1);
        foreach (string suffix in new[] { "", "_dropout" })
        {
            int n = batch * seq * c;
            var (context, dq, dk, dv) = (new float[n], new float[n], new float[n], new float[n]);
            var stats = new float[2 * headRows];
            var dots = new float[headRows];
            fixed (float* pq = q, pk = k, pv = v, pd = dContext, pc = context, pdq = dq, pdk = dk, pdv = dv, ps = stats, pdots = dots)
            fixed (uint* pb = bits)
            {
                uint* mask = suffix == "" ? null : pb;
                Kernels.AttentionForward(path, pc, ps, mask, scale, pq, pk, pv, batch, seq, c, heads);
                Kernels.AttentionBackward(path, pdq, pdk, pdv, pdots, pd, ps, mask, scale, pq, pk, pv, pc, batch, seq, c, heads);
            }
            foreach (var (name, actual) in new[] { ("context", context), ("dq", dq), ("dk", dk), ("dv", dv) })
            {
                var expected = io.Floats(name + suffix);
                float relative = ReferenceFixture.MaxAbsDiff(actual, expected) / ReferenceFixture.MaxAbs(expected);
                output.WriteLine($"{pathName} {name}{suffix}: max diff {relative:E2} of the tensor's max");
                Assert.True(relative <= 1e-5f, $"{name}{suffix} differs by {relative} of its max");
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ModelLossAndGradientsMatchPyTorch(bool dropout)
    {
        var f = new ReferenceFixture("tiny-t300");
        using var plain = f.CreateModel();
        using var model = new GptModel(f.Config with { DropRate = dropout ? 0.1f : 0f });
        for (int i = 0; i < model.Parameters().Count; i++) model.Parameters()[i].Value.CopyFrom(plain.Parameters()[i].Value);
        if (dropout)
        {
            model.Train();
            model.DropoutGenerator = new TorchGenerator(77); // torch.manual_seed(77) before the forward pass
        }
        else
        {
            model.Eval();
            using (model.NoGrad())
            {
                float logitsDiff = ReferenceFixture.MaxAbsDiff(model.Forward(f.Inputs).Span, f.Io.Floats("logits"));
                Assert.True(logitsDiff <= 1e-4f, $"logits differ by {logitsDiff}");
            }
        }
        model.HeadChunkRows = 256; // 600 rows: two chunks and a short one
        var loss = Pretraining.CalcLossBatch(f.Inputs, f.Targets, model);
        float expectedLoss = f.Io.Floats(dropout ? "loss_dropout" : "loss")[0];
        Assert.True(Math.Abs(loss.Value - expectedLoss) <= 1e-5f, $"loss {loss.Value} vs {expectedLoss}");
        loss.Backward();
        using var grads = f.Open(dropout ? "grads_dropout.safetensors" : "grads.safetensors");
        float worst = 0;
        foreach (var p in model.Parameters())
        {
            var expected = grads.Floats(p.Name);
            float relative = ReferenceFixture.MaxAbsDiff(p.Grad.Span, expected) / Math.Max(ReferenceFixture.MaxAbs(expected), 1e-30f);
            worst = Math.Max(worst, relative);
            Assert.True(relative <= 1e-4f, $"{p.Name} gradient differs by {relative} of its max");
        }
        output.WriteLine($"tiny-t300 (dropout {dropout}): loss {loss.Value} vs {expectedLoss}, worst gradient diff {worst:E2} of the tensor's max");
    }
}
