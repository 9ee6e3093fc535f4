using GptSharp.Model;
using GptSharp.Tensors;
using Xunit.Abstractions;
using GptSharp.Data;

namespace GptSharp.Tests.Model;

/// <summary>
/// Exact parity with PyTorch 1.13 on the book-named fixtures: logits, loss, every gradient, three AdamW
/// steps, per-block activations and greedy decoding (tolerances from Fixtures/reference/README.md).
/// </summary>
public class ReferenceParityTests(ITestOutputHelper output)
{
    public static TheoryData<string> Fixtures => new(ReferenceFixture.BookNamed);

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void LogitsAndLossMatchPyTorch(string name)
    {
        var f = new ReferenceFixture(name);
        using var model = f.CreateModel();
        model.Eval();
        var logits = model.Forward(f.Inputs);
        Assert.Equal(f.Io.Shape("logits"), logits.ShapeArray);
        float logitsDiff = ReferenceFixture.MaxAbsDiff(logits.Span, f.Io.Floats("logits"));
        var loss = Losses.CrossEntropy(logits, f.Targets);
        float lossDiff = Math.Abs(loss.Value - f.Io.Floats("loss")[0]);
        output.WriteLine($"{name}: logits max abs diff {logitsDiff:E2}, loss diff {lossDiff:E2} (loss {loss.Value})");
        Assert.True(logitsDiff <= 1e-4f, $"logits differ by {logitsDiff}");
        Assert.True(lossDiff <= 1e-5f, $"loss differs by {lossDiff}");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void ActivationsMatchPyTorch(string name)
    {
        var f = new ReferenceFixture(name);
        using var model = f.CreateModel();
        model.Eval();
        model.Forward(f.Inputs);
        using var acts = f.Open("activations.safetensors");
        int layers = f.Config.Layers;
        float worst = 0;
        for (int i = 0; i <= layers + 1; i++)
        {
            string key = i == 0 ? "act.embed" : i <= layers ? $"act.block{i - 1}" : "act.final_norm";
            float diff = ReferenceFixture.MaxAbsDiff(model.HiddenState(i), acts.Floats(key));
            worst = Math.Max(worst, diff);
            Assert.True(diff <= 1e-4f, $"{key} differs by {diff}");
        }
        output.WriteLine($"{name}: activations max abs diff {worst:E2}");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void GradientsMatchPyTorch(string name)
    {
        var f = new ReferenceFixture(name);
        using var model = f.CreateModel();
        model.Train();
        var loss = Losses.CrossEntropy(model.Forward(f.Inputs), f.Targets);
        loss.Backward();
        using var grads = f.Open("grads.safetensors");
        float worst = 0;
        string worstName = "";
        foreach (var p in model.Parameters())
        {
            var expected = grads.Floats(p.Name);
            float diff = ReferenceFixture.MaxAbsDiff(p.Grad.Span, expected);
            if (p.Name.EndsWith("att.W_key.bias"))
            {
                // Zero in exact arithmetic (softmax ignores a per-row constant): absolute tolerance.
                Assert.True(diff <= 1e-6f, $"{p.Name} gradient differs by {diff}");
                continue;
            }
            float relative = diff / Math.Max(ReferenceFixture.MaxAbs(expected), 1e-30f);
            if (relative > worst) (worst, worstName) = (relative, p.Name);
            Assert.True(relative <= 1e-4f, $"{p.Name} gradient differs by {diff} ({relative} of its max)");
        }
        output.WriteLine($"{name}: worst gradient diff {worst:E2} of the tensor's max ({worstName})");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void ThreeAdamWStepsMatchPyTorch(string name)
    {
        var f = new ReferenceFixture(name);
        using var model = f.CreateModel();
        model.Train();
        using var optimizer = new AdamW(model.Parameters(), lr: 0.0004f, weightDecay: 0.1f);
        var expectedLosses = f.Io.Floats("losses_3steps");
        for (int step = 0; step < 3; step++)
        {
            optimizer.ZeroGrad();
            var loss = Losses.CrossEntropy(model.Forward(f.Inputs), f.Targets);
            Assert.True(Math.Abs(loss.Value - expectedLosses[step]) <= 1e-5f, $"loss before step {step + 1}: {loss.Value} vs {expectedLosses[step]}");
            loss.Backward();
            optimizer.Step();
        }
        using var after = f.Open("after3steps.safetensors");
        float worst = 0;
        foreach (var p in model.Parameters())
        {
            float diff = ReferenceFixture.MaxAbsDiff(p.Value.Span, after.Floats(p.Name));
            if (p.Name.EndsWith("att.W_key.bias"))
            {
                Assert.True(diff <= 1.5e-3f, $"{p.Name} after 3 steps differs by {diff}");
                continue;
            }
            worst = Math.Max(worst, diff);
            Assert.True(diff <= 1e-5f, $"{p.Name} after 3 steps differs by {diff}");
        }
        output.WriteLine($"{name}: parameters after 3 AdamW steps max abs diff {worst:E2}");
    }

    [Theory]
    [MemberData(nameof(Fixtures))]
    public void GreedyDecodingMatchesPyTorch(string name)
    {
        var f = new ReferenceFixture(name);
        using var model = f.CreateModel();
        model.Eval();
        var expected = f.Io.Ints("generated");
        var ids = f.Inputs.Row(0).ToArray().ToList();
        using (model.NoGrad())
        {
            for (int i = 0; i < 8; i++)
            {
                // The book's generate_text_simple: crop to the context, take the last position's argmax.
                var window = ids.Skip(Math.Max(0, ids.Count - f.Config.ContextLength)).ToArray();
                var logits = model.Forward(TokenBatch.FromSequence(window));
                var last = logits.Span.Slice((window.Length - 1) * f.Config.VocabSize, f.Config.VocabSize);
                ids.Add(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(last));
            }
        }
        Assert.Equal(expected, ids.ToArray());
    }
}
