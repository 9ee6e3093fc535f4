using GptSharp.Generation;
using GptSharp.Randomness;

namespace GptSharp.Tests.Generation;

/// <summary>The one pick shared by the book's loop, <see cref="TextGenerator"/> and the batch scheduler.</summary>
public class TokenSamplerTests
{
    private static float[] RandomLogits(int vocab, ulong seed)
    {
        var logits = new float[vocab];
        new TorchGenerator(seed).Uniform(logits, -4, 4);
        return logits;
    }

    private static readonly GenerationOptions Everything = new()
    {
        Temperature = 0.8f, TopK = 40, TopP = 0.9f, MinP = 0.01f, RepetitionPenalty = 1.3f, FrequencyPenalty = 0.5f,
        PresencePenalty = 0.2f, LogitBias = new Dictionary<int, float> { [3] = 5f, [7] = -100f },
    };

    [Fact]
    public void PickIsThePipelineThenSoftmaxAndOneMultinomialDraw()
    {
        var logits = RandomLogits(500, 11);
        int[] tokens = [1, 2, 3, 3, 9, 40, 3];
        var sampler = new TokenSampler(Everything, new TorchGenerator(5));
        var reference = new TorchGenerator(5);
        var pipeline = Everything.CreatePipeline();
        var scratch = new float[600];
        for (int draw = 0; draw < 20; draw++)
        {
            var expected = logits.ToArray();
            pipeline.Process(tokens, 4, expected);
            var probabilities = new float[expected.Length];
            Sampling.Softmax(expected, probabilities);
            Assert.Equal(reference.Multinomial(probabilities), sampler.Pick(tokens, 4, logits, scratch));
        }
    }

    [Fact]
    public void TemperatureZeroIsTheArgmaxOfTheProcessedLogits()
    {
        var logits = RandomLogits(300, 2);
        var options = new GenerationOptions { LogitBias = new Dictionary<int, float> { [17] = 100f } };
        Assert.Equal(17, new TokenSampler(options, null).Pick([], 0, logits, new float[300]));
        Assert.Equal(Sampling.Argmax(logits), new TokenSampler(new GenerationOptions(), null).Pick([], 0, logits, new float[300]));
    }

    [Fact]
    public void SamplingWithoutAGeneratorIsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => new TokenSampler(new GenerationOptions { Temperature = 1f }, null));
        Assert.Contains("random generator", e.Message);
    }

    [Fact]
    public void LogProbabilityIsTheRawLogSoftmaxWithTheLargestEntriesFirst()
    {
        var logits = RandomLogits(200, 3);
        var expected = new float[200];
        Sampling.LogSoftmax(logits, expected);
        float logprob = TokenSampler.LogProbability(logits, 42, 5, new float[200], out var top);
        Assert.Equal(expected[42], logprob);
        var best = Enumerable.Range(0, 200).OrderByDescending(i => expected[i]).Take(5).ToArray();
        Assert.Equal(best, top.Select(t => t.Token).ToArray());
        Assert.Equal(best.Select(i => expected[i]).ToArray(), top.Select(t => t.Logprob).ToArray());
        TokenSampler.LogProbability(logits, 42, 0, new float[200], out var none);
        Assert.Empty(none);
    }

    [Fact]
    public void PickingAllocatesNothing()
    {
        var logits = RandomLogits(1000, 4);
        var tokens = Enumerable.Range(0, 64).Select(i => i * 7 % 1000).ToArray();
        var sampler = new TokenSampler(Everything, new TorchGenerator(9));
        var scratch = new float[1000];
        Allocations.AssertStepsAllocateNothing(() => sampler.Pick(tokens, 16, logits, scratch), stepsPerWindow: 20);
    }
}
