using GptSharp.Model;
using GptSharp.Tensors;

namespace GptSharp.Tests;

public class SmokeTests
{
    [Fact]
    public void Book124MConfigHasTheBooksParameterCount()
    {
        // The book: 163,009,536 parameters for GPT_CONFIG_124M with its untied output head (ctx 1024).
        Assert.Equal(163_009_536, GptConfig.Gpt2Small.ParameterCount);
    }

    [Fact]
    public unsafe void TensorIsAlignedAndZeroed()
    {
        using var t = new Tensor(3, 5);
        Assert.Equal(0, (long)t.Data % Tensor.Alignment);
        Assert.All(t.ToArray(), v => Assert.Equal(0f, v));
    }
}
