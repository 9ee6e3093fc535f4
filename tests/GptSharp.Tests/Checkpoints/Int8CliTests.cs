using GptSharp.Checkpoints;
using GptSharp.Cli.Commands;
using GptSharp.Generation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tokenization;
using GptSharp.Tests.Generation;
using GptSharp.Data;

namespace GptSharp.Tests.Checkpoints;

/// <summary><c>convert --quantize int8</c>, <c>inspect</c> of the result, and <c>generate --quantize int8</c>, in-process.</summary>
public class Int8CliTests(TinyGpt2File model) : IClassFixture<TinyGpt2File>
{
    [Fact]
    public void ConvertQuantizesAndTheFileLoadsAsInt8()
    {
        using var dir = new TempDir();
        string path = dir.File("int8.safetensors");
        var output = new StringWriter();
        Assert.Equal(0, ConvertCommand.Create(output).Parse([model.Path, path, "--quantize", "int8"]).Invoke());
        using (var loaded = GptModel.Load(path))
        {
            Assert.True(loaded.IsQuantized);
            Assert.All(loaded.LinearWeights(), p => Assert.NotNull(p.Int8));
        }
        var listing = new StringWriter();
        Assert.Equal(0, InspectCommand.Create(listing, plain: true).Parse([path]).Invoke());
        Assert.Contains("out_head.weight\tI8\t[50257, 16]", listing.ToString());
        Assert.Contains("out_head.weight_scale\tF32\t[50257, 1]", listing.ToString());
        Assert.Contains("metadata quantization: int8-block32", listing.ToString());
        using (var float32 = GptModel.Load(model.Path)) Assert.Contains($"parameters: {float32.ParameterCount:N0}", listing.ToString());

        // int8 only fits a model file; an unknown precision is refused by the parser.
        Assert.Equal(1, ConvertCommand.Create(new StringWriter()).Parse([model.Path, dir.File("x.pth"), "--quantize", "int8"]).Invoke());
        Assert.False(File.Exists(dir.File("x.pth")));
        Assert.Equal(1, ConvertCommand.Create(new StringWriter()).Parse([path, dir.File("y.pth")]).Invoke());
        Assert.False(File.Exists(dir.File("y.pth")));
        Assert.NotEqual(0, ConvertCommand.Create(new StringWriter()).Parse([model.Path, dir.File("z.safetensors"), "--quantize", "int4"]).Invoke());
    }

    [Fact]
    public void GenerateQuantizesAtLoad()
    {
        const string prompt = "Every effort moves you";
        var tokenizer = Gpt2Tokenizer.Instance;
        using var quantized = GptModel.Load(model.Path, new LoadOptions { Quantization = WeightQuantization.Int8 });
        using var generator = new TextGenerator(quantized);
        var expected = generator.Generate(TokenBatch.FromSequence(tokenizer.Encode(prompt)), 10);
        var output = new StringWriter();
        var error = new StringWriter();
        int code = GenerateCommand.Create(output, error).Parse(["--model", model.Path, "--prompt", prompt, "-n", "10", "--quantize", "int8"]).Invoke();
        Assert.Equal("", error.ToString());
        Assert.Equal(0, code);
        Assert.Equal(tokenizer.Decode(expected.Ids) + Environment.NewLine, output.ToString());
    }
}
