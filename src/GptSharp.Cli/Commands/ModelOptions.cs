using System.CommandLine;
using GptSharp.Model;
using GptSharp.Checkpoints;

namespace GptSharp.Cli.Commands;

/// <summary>
/// How a command names the model it runs (<c>generate</c>, <c>repl</c>, <c>eval</c>): <c>--model</c> (run directory,
/// model file, GPT-2 folder or size name) or <c>--model-dir</c>, resolved by <see cref="ModelStore"/>.
/// </summary>
internal sealed class ModelOptions
{
    public const string Help = "A run directory, a model file (.safetensors or .pth), an OpenAI GPT-2 folder, " +
        "or gpt2-small|gpt2-medium|gpt2-large|gpt2-xl (downloaded with `gptsharp download`).";

    public readonly Option<string> Model = new("--model", "-m") { Description = Help };
    public readonly Option<string> ModelDir = new("--model-dir") { Description = "A folder holding OpenAI's GPT-2 files placed by hand (same as --model DIR)." };
    public readonly Option<string?> Quantize = QuantizeOption();

    /// <summary><c>--quantize int8</c>: the linear weights as int8 (about 3.5× less memory, faster generation; inference only).</summary>
    public static Option<string?> QuantizeOption(string what = "Quantize the model's linear weights while loading")
    {
        var option = new Option<string?>("--quantize") { Description = what + ": int8 (one scale per 32 weights; ~3.5x less memory, faster generation, inference only; see docs/int8.md)." };
        option.AcceptOnlyFromAmong("int8");
        return option;
    }

    /// <summary>The quantization asked for by <paramref name="option"/>.</summary>
    public static WeightQuantization QuantizationOf(ParseResult parse, Option<string?> option) =>
        parse.GetValue(option) == "int8" ? WeightQuantization.Int8 : WeightQuantization.None;

    public void AddTo(Command command)
    {
        command.Options.Add(Model);
        command.Options.Add(ModelDir);
        command.Options.Add(Quantize);
    }

    /// <summary>The model named by --model or --model-dir (exactly one of them).</summary>
    public GptModel Load(ParseResult parse)
    {
        string? model = parse.GetValue(Model), directory = parse.GetValue(ModelDir);
        if (model is null == directory is null)
            throw new ArgumentException("give the model with exactly one of --model or --model-dir: " + Help);
        if (model is not null && string.IsNullOrWhiteSpace(model)) throw new ArgumentException("--model is empty: " + Help);
        return GptModel.Load(model ?? directory!, new LoadOptions { Quantization = QuantizationOf(parse, Quantize) });
    }
}
